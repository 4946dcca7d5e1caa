//! `kubectl-block`: the kubectl plugin of block-controller (`kubectl block …` once it is on PATH).
//!
//! One module per command; `client` builds the connection from the kubeconfig and turns API
//! errors into messages an operator can act on; `targets` resolves names, selectors and `--all`
//! and asks for confirmation; `output` renders tables, JSON and YAML.
#![deny(clippy::unwrap_used)]

/// `print!` that never panics (a closed pipe, as in `kubectl block status -A | head`, must not
/// abort a command halfway through its writes).
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::emit(&format!($($arg)*)) };
}

/// `println!` that never panics; see [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::emit(&format!("{}\n", format_args!($($arg)*))) };
}

mod cleanup;
mod client;
mod list;
mod lock;
mod output;
mod report;
mod status;
mod targets;

use clap::{CommandFactory, Parser, Subcommand};

/// Lock, unlock and inspect namespaces managed by block-controller.
///
/// A locked namespace has its workloads scaled to zero, its CronJobs suspended and a zero
/// ResourceQuota; when the lock outlives its unlock time the controller deletes the namespace.
/// Lock and unlock go through a BlockRequest (recorded and reported by the controller) unless
/// --direct is given.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-block",
    bin_name = "kubectl block",
    version,
    propagate_version = true,
    after_help = "Examples:\n  \
      kubectl block lock team-a --duration 24h --reason \"unpaid invoice\"\n  \
      kubectl block lock --selector tier=trial --dry-run\n  \
      kubectl block unlock team-a\n  \
      kubectl block status team-a --details\n  \
      kubectl block status --locked-only -o wide\n  \
      kubectl block list -A\n  \
      kubectl block report\n  \
      kubectl block cleanup --dry-run"
)]
struct Cli {
    #[command(flatten)]
    global: client::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lock namespaces: scale workloads to zero, suspend CronJobs, start the expiry clock.
    Lock(lock::LockArgs),
    /// Unlock namespaces: restore workloads and CronJobs, remove the quota and the deadline.
    Unlock(lock::UnlockArgs),
    /// Show the state of namespaces: lock, remaining time, reason, owning replica.
    Status(status::StatusArgs),
    /// List BlockRequests with their progress.
    List(list::ListArgs),
    /// Summarise the cluster: namespaces by state, locks expiring within 24h, requests not
    /// Ready, unowned hash ranges.
    Report(report::ReportArgs),
    /// Remove leftovers of the controller (stray quota, stale annotations) from namespaces that
    /// are not locked.
    Cleanup(cleanup::CleanupArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Command::Lock(a) = &cli.command {
        // clap's `requires` does not hold against a conflicting positional; say it here.
        if !a.exclude.is_empty() && !a.all {
            Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "--exclude applies only with --all",
                )
                .exit();
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        let g = &cli.global;
        match &cli.command {
            Command::Lock(a) => lock::lock(g, a).await,
            Command::Unlock(a) => lock::unlock(g, a).await,
            Command::Status(a) => status::run(g, a).await,
            Command::List(a) => list::run(g, a).await,
            Command::Report(a) => report::run(g, a).await,
            Command::Cleanup(a) => cleanup::run(g, a).await,
        }
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
