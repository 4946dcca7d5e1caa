//! `local-control-plane`: starts the local control plane and keeps it up until interrupted.
//!
//! Used by `deploy/local/run` and the load generator. Prints `KUBECONFIG=<path>` and
//! `AUDIT_LOG=<path>` once ready, copies the kubeconfig to `--kubeconfig-out` if given, and stops
//! everything on SIGINT, SIGTERM or when its standard input closes (so a parent that dies takes it
//! along).

use std::path::PathBuf;
use std::time::Duration;

use local_control_plane::{ControlPlane, Options};

fn usage() -> ! {
    eprintln!(
        "usage: local-control-plane [--dir DIR] [--kubeconfig-out PATH] [--no-controller-manager] \
         [--watch-stdin] [-- EXTRA_APISERVER_FLAGS...]"
    );
    std::process::exit(2)
}

fn main() {
    let mut options = Options::default();
    let mut kubeconfig_out: Option<PathBuf> = None;
    let mut watch_stdin = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => options.dir = Some(args.next().unwrap_or_else(|| usage()).into()),
            "--kubeconfig-out" => {
                kubeconfig_out = Some(args.next().unwrap_or_else(|| usage()).into())
            }
            "--no-controller-manager" => options.controller_manager = false,
            "--watch-stdin" => watch_stdin = true,
            "--" => options.extra_apiserver_args.extend(args.by_ref()),
            "-h" | "--help" => usage(),
            other => {
                eprintln!("unknown argument {other:?}");
                usage()
            }
        }
    }
    let cp = match ControlPlane::start(options) {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("local-control-plane: {e}");
            std::process::exit(1)
        }
    };
    if let Some(out) = &kubeconfig_out {
        if let Err(e) = std::fs::copy(cp.kubeconfig(), out) {
            eprintln!(
                "local-control-plane: copying the kubeconfig to {}: {e}",
                out.display()
            );
            std::process::exit(1)
        }
    }
    println!(
        "KUBECONFIG={}",
        kubeconfig_out
            .as_deref()
            .unwrap_or(cp.kubeconfig())
            .display()
    );
    if let Some(audit) = cp.audit_log() {
        println!("AUDIT_LOG={}", audit.display());
    }
    println!("SERVER={}", cp.server());
    println!("READY_IN_MS={}", cp.startup_time().as_millis());

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("local-control-plane: {e}");
            std::process::exit(1)
        }
    };
    rt.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("local-control-plane: {e}");
                    return;
                }
            };
        let stdin_closed = async {
            if !watch_stdin {
                return std::future::pending::<()>().await;
            }
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
            _ = stdin_closed => {},
        }
    });
    drop(cp);
    // Give the kernel a moment to release the ports before the caller reuses them.
    std::thread::sleep(Duration::from_millis(50));
}
