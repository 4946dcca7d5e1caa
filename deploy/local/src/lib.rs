//! A real Kubernetes control plane on loopback, started by the project (envtest-style).
//!
//! Every test that touches Kubernetes, the `deploy/local/run` command and the load generator use
//! this: `etcd`, `kube-apiserver` (TLS on 127.0.0.1, client certificates and static tokens, RBAC,
//! an audit log of every mutating request) and `kube-controller-manager` (namespace, garbage
//! collector, deployment, replicaset, statefulset, job and service-account controllers), each on
//! free ports, with a kubeconfig written next to them.
//!
//! Binaries come from `KUBEBUILDER_ASSETS` when it names a folder holding `kube-apiserver` and
//! `etcd` (the envtest convention); otherwise `deploy/local/provision.sh` builds v1.20.2 once from
//! Debian's packages and caches it outside the clone.
//!
//! # Teardown
//!
//! Child processes are started through `setpriv --pdeathsig KILL` from a dedicated thread that
//! lives as long as the [`ControlPlane`] (or the whole process, for [`shared`]). So they die with
//! their owner however it ends: a clean drop, a panic, an abort or a `kill -9` of the test binary.
//! Working directories of owners that died are removed by the next start.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cp = local_control_plane::shared().map_err(|e| e.clone())?;
//! let client = cp.client().await?;
//! let version = client.apiserver_version().await?;
//! assert_eq!(version.major, "1");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod audit;

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why a control plane could not be provided.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The binaries are missing and provisioning them failed.
    #[error("provisioning the control-plane binaries failed: {0}")]
    Provision(String),
    /// A file of the working directory could not be written.
    #[error("preparing {path}: {message}")]
    Prepare {
        /// The file or folder involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A component could not be spawned.
    #[error("starting {component}: {message}")]
    Spawn {
        /// `etcd`, `kube-apiserver` or `kube-controller-manager`.
        component: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A component exited before the control plane was ready.
    #[error("{component} exited early ({status}); last lines of its log:\n{log_tail}")]
    Exited {
        /// The component that stopped.
        component: &'static str,
        /// Its exit status.
        status: String,
        /// The end of its log, to say why.
        log_tail: String,
    },
    /// `/readyz` did not answer ok in time.
    #[error("the API server was not ready after {0:?}: {1}")]
    NotReady(Duration, String),
    /// A kube client could not be built from the kubeconfig.
    #[error("building a client from {path}: {message}")]
    Client {
        /// The kubeconfig used.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run kube-controller-manager too (needed for namespace deletion, garbage collection,
    /// Deployments creating ReplicaSets). Default: true.
    pub controller_manager: bool,
    /// Extra flags for kube-apiserver, appended last (they win over ours).
    pub extra_apiserver_args: Vec<String>,
    /// Working directory; a fresh one under the temp dir when `None`. Removed on teardown.
    pub dir: Option<PathBuf>,
    /// How long to wait for `/readyz`.
    pub ready_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            controller_manager: true,
            extra_apiserver_args: Vec::new(),
            dir: None,
            ready_timeout: Duration::from_secs(90),
        }
    }
}

/// A running control plane. Dropping it stops every component and removes its directory.
#[derive(Debug)]
pub struct ControlPlane {
    kubeconfig: PathBuf,
    audit_log: Option<PathBuf>,
    server: String,
    dir: Option<PathBuf>,
    startup: Duration,
    stop: Option<mpsc::Sender<()>>,
    owner: Option<JoinHandle<()>>,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and (optionally) kube-controller-manager and waits for `/readyz`.
    pub fn start(options: Options) -> Result<ControlPlane, Error> {
        let bins = Binaries::locate()?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        // The owner thread spawns the children and lives until stopped: `--pdeathsig` fires when
        // the *thread* that forked a child ends, so it must not be a short-lived test thread.
        let owner = std::thread::Builder::new()
            .name("control-plane".into())
            .spawn(move || {
                let started = Instant::now();
                match Running::start(&bins, &options) {
                    Ok(mut running) => {
                        let info = (
                            running.kubeconfig.clone(),
                            running.audit_log.clone(),
                            running.server.clone(),
                            running.dir.clone(),
                            started.elapsed(),
                        );
                        if ready_tx.send(Ok(info)).is_err() {
                            running.stop();
                            return;
                        }
                        // Wait for a stop request or for the handle to be dropped.
                        let _ = stop_rx.recv();
                        running.stop();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| Error::Spawn {
                component: "owner thread",
                message: e.to_string(),
            })?;
        match ready_rx.recv() {
            Ok(Ok((kubeconfig, audit_log, server, dir, startup))) => Ok(ControlPlane {
                kubeconfig,
                audit_log: Some(audit_log),
                server,
                dir: Some(dir),
                startup,
                stop: Some(stop_tx),
                owner: Some(owner),
            }),
            Ok(Err(e)) => {
                let _ = owner.join();
                Err(e)
            }
            Err(_) => Err(Error::Spawn {
                component: "owner thread",
                message: "it ended without reporting".into(),
            }),
        }
    }

    /// Uses an existing cluster named by `KUBECONFIG` (or `~/.kube/config`); nothing is started.
    pub fn existing() -> Result<ControlPlane, Error> {
        let path = std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".kube/config")))
            .ok_or_else(|| Error::Prepare {
                path: PathBuf::from("KUBECONFIG"),
                message: "neither KUBECONFIG nor HOME is set".into(),
            })?;
        Ok(ControlPlane {
            kubeconfig: path,
            audit_log: None,
            server: String::new(),
            dir: None,
            startup: Duration::ZERO,
            stop: None,
            owner: None,
        })
    }

    /// The kubeconfig (cluster-admin through a client certificate).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's audit log (JSON lines, level Metadata for every mutating request), when
    /// this control plane was started by us.
    pub fn audit_log(&self) -> Option<&Path> {
        self.audit_log.as_deref()
    }

    /// The API server's URL, e.g. `https://127.0.0.1:40123` (empty for an existing cluster).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The working directory holding certificates, logs and etcd data, if we started it.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// How long the start took, from spawning etcd to `/readyz` answering ok.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// A client for this control plane, bound to the caller's tokio runtime.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        self.client_with_agent("block-controller-tests").await
    }

    /// A client that sends `user_agent` (it shows in the audit log as `userAgent`).
    pub async fn client_with_agent(&self, user_agent: &str) -> Result<kube::Client, Error> {
        let mut cfg = self.config().await?;
        let agent = http::HeaderValue::from_str(user_agent).map_err(|e| Error::Client {
            path: self.kubeconfig.clone(),
            message: format!("user agent {user_agent:?}: {e}"),
        })?;
        cfg.headers.push((http::header::USER_AGENT, agent));
        kube::Client::try_from(cfg).map_err(|e| Error::Client {
            path: self.kubeconfig.clone(),
            message: e.to_string(),
        })
    }

    /// The client configuration read from the kubeconfig.
    pub async fn config(&self) -> Result<kube::Config, Error> {
        let kc =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).map_err(|e| Error::Client {
                path: self.kubeconfig.clone(),
                message: e.to_string(),
            })?;
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Client {
                path: self.kubeconfig.clone(),
                message: e.to_string(),
            })
    }

    /// Stops every component and removes the working directory. Also done on drop.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(owner) = self.owner.take() {
            let _ = owner.join();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One control plane per test binary, started on first use and reused by every test in it.
///
/// With `USE_EXISTING_CLUSTER=true` (the envtest convention) it uses the cluster named by
/// `KUBECONFIG` instead of starting one. The processes die with the test binary, however it ends.
pub fn shared() -> Result<&'static ControlPlane, &'static Error> {
    static SHARED: OnceLock<Result<ControlPlane, Error>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if std::env::var("USE_EXISTING_CLUSTER").is_ok_and(|v| v == "true" || v == "1") {
                ControlPlane::existing()
            } else {
                ControlPlane::start(Options::default())
            }
        })
        .as_ref()
}

/// A name unique to this process and call, a valid DNS label: `<prefix>-<pid>-<n>`, so tests can
/// run in parallel (and several test binaries against one cluster) without sharing namespaces.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut p: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    p.truncate(40);
    format!("{}-{}-{}", p.trim_matches('-'), std::process::id(), n)
}

/// Where the binaries are.
#[derive(Debug, Clone)]
struct Binaries {
    apiserver: PathBuf,
    etcd: PathBuf,
    controller_manager: Option<PathBuf>,
}

impl Binaries {
    fn locate() -> Result<Binaries, Error> {
        let from = |dir: &Path| -> Option<Binaries> {
            let apiserver = dir.join("kube-apiserver");
            let etcd = dir.join("etcd");
            if apiserver.is_file() && etcd.is_file() {
                let kcm = dir.join("kube-controller-manager");
                Some(Binaries {
                    apiserver,
                    etcd,
                    controller_manager: kcm.is_file().then_some(kcm),
                })
            } else {
                None
            }
        };
        let mut found = std::env::var_os("KUBEBUILDER_ASSETS")
            .map(PathBuf::from)
            .and_then(|d| from(&d));
        if found
            .as_ref()
            .is_none_or(|b| b.controller_manager.is_none())
        {
            // Our own provisioning: a no-op printing the cached folder once it was built.
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("provision.sh");
            let out = Command::new("bash")
                .arg(&script)
                .env_remove("KUBEBUILDER_ASSETS")
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| Error::Provision(format!("running {}: {e}", script.display())))?;
            if !out.status.success() {
                return Err(Error::Provision(format!(
                    "{} exited with {}",
                    script.display(),
                    out.status
                )));
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            let dir = stdout.lines().last().unwrap_or_default().trim().to_string();
            let ours = from(Path::new(&dir)).ok_or_else(|| {
                Error::Provision(format!(
                    "{} printed {dir:?}, which holds no binaries",
                    script.display()
                ))
            })?;
            found = Some(match found {
                // Keep the caller's API server and etcd; borrow only our controller manager.
                Some(mut theirs) => {
                    theirs.controller_manager = ours.controller_manager;
                    theirs
                }
                None => ours,
            });
        }
        found.ok_or_else(|| Error::Provision("no binaries found".into()))
    }
}

/// The processes of one control plane, owned by its owner thread.
struct Running {
    children: Vec<(&'static str, Child)>,
    kubeconfig: PathBuf,
    audit_log: PathBuf,
    server: String,
    dir: PathBuf,
    remove_dir: bool,
}

impl Running {
    fn start(bins: &Binaries, options: &Options) -> Result<Running, Error> {
        let (dir, remove_dir) = match &options.dir {
            Some(d) => (d.clone(), false),
            None => {
                remove_stale_dirs();
                (
                    std::env::temp_dir().join(format!(
                        "block-controller-cp-{}-{}",
                        std::process::id(),
                        next_id()
                    )),
                    true,
                )
            }
        };
        fs::create_dir_all(&dir).map_err(|e| prepare(&dir, e))?;
        let mut running = Running {
            children: Vec::new(),
            kubeconfig: dir.join("kubeconfig"),
            audit_log: dir.join("audit.log"),
            server: String::new(),
            dir: dir.clone(),
            remove_dir,
        };
        match running.launch(bins, options) {
            Ok(()) => Ok(running),
            Err(e) => {
                running.stop();
                Err(e)
            }
        }
    }

    fn launch(&mut self, bins: &Binaries, options: &Options) -> Result<(), Error> {
        let dir = self.dir.clone();
        make_certificates(&dir)?;
        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let api_port = free_port()?;
        self.server = format!("https://127.0.0.1:{api_port}");

        write(
            &dir.join("tokens.csv"),
            "admin-token,admin,admin,\"system:masters\"\n",
        )?;
        write(
            &dir.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n\
             - level: Request\n  verbs: [\"create\", \"update\", \"patch\", \"delete\"]\n  resources: [{group: \"coordination.k8s.io\", resources: [\"leases\"]}]\n\
             - level: Metadata\n  verbs: [\"create\", \"update\", \"patch\", \"delete\", \"deletecollection\"]\n\
             - level: None\n",
        )?;
        write(&self.kubeconfig, &kubeconfig(&self.server, &dir, "admin"))?;
        write(
            &dir.join("kcm.kubeconfig"),
            &kubeconfig(&self.server, &dir, "kcm"),
        )?;

        // etcd data on tmpfs when there is one: fsync-bound writes dominate a disk-backed etcd.
        let shm = Path::new("/dev/shm");
        let etcd_data = if shm.is_dir() {
            shm.join(format!(
                "block-controller-etcd-{}",
                dir.file_name().and_then(|n| n.to_str()).unwrap_or("x")
            ))
        } else {
            dir.join("etcd")
        };
        let _ = fs::remove_dir_all(&etcd_data);
        write(&dir.join("etcd-data-path"), &etcd_data.to_string_lossy())?;
        if self.remove_dir {
            // A janitor that removes both folders when the owner thread dies without a clean stop
            // (a process-wide fixture is never dropped); a clean stop kills it and cleans itself.
            let script = format!(
                "trap 'kill $! 2>/dev/null; rm -rf \"{}\" \"{}\"; exit 0' TERM; sleep infinity & wait",
                dir.display(),
                etcd_data.display()
            );
            self.spawn_with_pdeathsig(
                "janitor",
                Path::new("/bin/sh"),
                &["-c".into(), script],
                "TERM",
            )?;
        }
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        self.spawn(
            "etcd",
            &bins.etcd,
            &[
                "--name=default".into(),
                format!("--data-dir={}", etcd_data.display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--quota-backend-bytes=8589934592".into(),
                "--log-level=warn".into(),
            ],
        )?;

        let d = |f: &str| dir.join(f).display().to_string();
        let mut api_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            "--insecure-port=0".into(),
            format!("--cert-dir={}", d("apiserver-certs")),
            format!("--tls-cert-file={}", d("serving.crt")),
            format!("--tls-private-key-file={}", d("serving.key")),
            format!("--client-ca-file={}", d("ca.crt")),
            format!("--token-auth-file={}", d("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            // No kubelets here: pods are never scheduled, and the ServiceAccount admission plugin
            // would make every pod create in a brand-new namespace race the token controller.
            "--disable-admission-plugins=ServiceAccount".into(),
            format!("--audit-policy-file={}", d("audit-policy.yaml")),
            format!("--audit-log-path={}", self.audit_log.display()),
            "--audit-log-format=json".into(),
            "--audit-log-maxsize=0".into(),
            "--profiling=false".into(),
            "--v=0".into(),
        ];
        api_args.extend(options.extra_apiserver_args.iter().cloned());
        self.spawn("kube-apiserver", &bins.apiserver, &api_args)?;

        let deadline = Instant::now() + options.ready_timeout;
        self.wait_ready(deadline)?;

        if options.controller_manager {
            let kcm = bins.controller_manager.as_ref().ok_or_else(|| Error::Spawn {
                component: "kube-controller-manager",
                message: "no kube-controller-manager binary (set KUBEBUILDER_ASSETS to a folder holding one, \
                          or let deploy/local/provision.sh build it)"
                    .into(),
            })?;
            self.spawn(
                "kube-controller-manager",
                kcm,
                &[
                    format!("--kubeconfig={}", d("kcm.kubeconfig")),
                    "--controllers=namespace,garbagecollector,deployment,replicaset,statefulset,job,serviceaccount,serviceaccount-token".into(),
                    "--use-service-account-credentials=true".into(),
                    format!("--service-account-private-key-file={}", d("sa.key")),
                    format!("--root-ca-file={}", d("ca.crt")),
                    "--leader-elect=false".into(),
                    "--port=0".into(),
                    "--secure-port=0".into(),
                    "--concurrent-namespace-syncs=10".into(),
                    "--concurrent-gc-syncs=20".into(),
                    "--v=0".into(),
                ],
            )?;
        }
        Ok(())
    }

    fn spawn(&mut self, component: &'static str, bin: &Path, args: &[String]) -> Result<(), Error> {
        self.spawn_with_pdeathsig(component, bin, args, "KILL")
    }

    fn spawn_with_pdeathsig(
        &mut self,
        component: &'static str,
        bin: &Path,
        args: &[String],
        signal: &str,
    ) -> Result<(), Error> {
        let log_path = self.dir.join(format!("{component}.log"));
        let log = fs::File::create(&log_path).map_err(|e| prepare(&log_path, e))?;
        let err_log = log.try_clone().map_err(|e| prepare(&log_path, e))?;
        let mut cmd = if Path::new("/usr/bin/setpriv").exists() {
            let mut c = Command::new("/usr/bin/setpriv");
            c.arg("--pdeathsig").arg(signal).arg("--").arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        let child = cmd.spawn().map_err(|e| Error::Spawn {
            component,
            message: format!("{}: {e}", bin.display()),
        })?;
        self.children.push((component, child));
        Ok(())
    }

    fn check_alive(&mut self) -> Result<(), Error> {
        for (component, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Exited {
                    component,
                    status: status.to_string(),
                    log_tail: tail(&self.dir.join(format!("{component}.log")), 3000),
                });
            }
        }
        Ok(())
    }

    fn wait_ready(&mut self, deadline: Instant) -> Result<(), Error> {
        let started = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::NotReady(Duration::ZERO, e.to_string()))?;
        let kubeconfig = self.kubeconfig.clone();
        let client = rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).map_err(|e| e.to_string())?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| e.to_string())?;
            kube::Client::try_from(cfg).map_err(|e| e.to_string())
        });
        let client = client.map_err(|message| Error::Client {
            path: kubeconfig.clone(),
            message,
        })?;
        let mut last;
        loop {
            self.check_alive()?;
            let attempt = rt.block_on(async {
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| e.to_string())?;
                tokio::time::timeout(Duration::from_secs(2), client.request_text(req))
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| e.to_string())
            });
            match attempt {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last = body,
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady(started.elapsed(), last));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        // Reverse order: controller manager, API server, then etcd.
        for (component, child) in self.children.iter_mut().rev() {
            if *component == "janitor" {
                // SIGTERM lets it stop its `sleep` child too; SIGKILL would orphan it.
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(child.id().to_string())
                    .status();
            } else {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        self.children.clear();
        if let Ok(p) = fs::read_to_string(self.dir.join("etcd-data-path")) {
            let _ = fs::remove_dir_all(p.trim());
        }
        if self.remove_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn next_id() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Removes working directories (and their etcd data) left by owners that died without teardown.
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("block-controller-cp-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(p) = fs::read_to_string(entry.path().join("etcd-data-path")) {
            let _ = fs::remove_dir_all(p.trim());
        }
        let _ = fs::remove_dir_all(entry.path());
    }
}

fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Spawn {
        component: "port picker",
        message: e.to_string(),
    })?;
    l.local_addr().map(|a| a.port()).map_err(|e| Error::Spawn {
        component: "port picker",
        message: e.to_string(),
    })
}

fn prepare(path: &Path, e: std::io::Error) -> Error {
    Error::Prepare {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    fs::write(path, contents).map_err(|e| prepare(path, e))
}

fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s
}

fn kubeconfig(server: &str, dir: &Path, user: &str) -> String {
    let d = |f: &str| dir.join(f).display().to_string();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n- name: {user}\n  user:\n    client-certificate: {crt}\n    client-key: {key}\n\
         contexts:\n- name: local\n  context:\n    cluster: local\n    user: {user}\ncurrent-context: local\n",
        ca = d("ca.crt"),
        crt = d(&format!("{user}.crt")),
        key = d(&format!("{user}.key")),
    )
}

/// A CA, the API server's serving certificate, client certificates for the admin and the
/// controller manager, and the service-account signing key, all through the `openssl` CLI.
///
/// rustls accepts the serving certificate only with an IP SAN for 127.0.0.1, server-auth usage,
/// `CA:FALSE` and a SHA-256 signature; the CN is ignored.
fn make_certificates(dir: &Path) -> Result<(), Error> {
    let run = |args: &[&str]| -> Result<(), Error> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| Error::Prepare {
                path: dir.to_path_buf(),
                message: format!("running openssl: {e} (is the openssl package installed?)"),
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Prepare {
                path: dir.to_path_buf(),
                message: format!(
                    "openssl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    };
    write(
        &dir.join("serving.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1\n",
    )?;
    write(
        &dir.join("client.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )?;
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha256",
        "-days",
        "3650",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=block-controller-local-ca",
    ])?;
    let leaf = |name: &str, subj: &str, ext: &str| -> Result<(), Error> {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        run(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subj,
        ])?;
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-sha256",
            "-days",
            "3650",
            "-extfile",
            ext,
            "-out",
            &crt,
        ])
    };
    leaf("serving", "/CN=127.0.0.1", "serving.ext")?;
    leaf("admin", "/O=system:masters/CN=admin", "client.ext")?;
    leaf("kcm", "/CN=system:kube-controller-manager", "client.ext")?;
    run(&["genrsa", "-out", "sa.key", "2048"])?;
    run(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    Ok(())
}

/// Spawns `cmd` so that it dies with this process, however the process ends (`setpriv
/// --pdeathsig KILL`, forked from a thread that lives as long as the process). For helpers that
/// tests start once per test binary, such as the controller under test.
/// Its stdout and stderr go to `log`.
pub fn spawn_tied(cmd: Command, log: &Path) -> std::io::Result<Child> {
    type Job = (Command, PathBuf, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<std::sync::Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let _ = std::thread::Builder::new()
            .name("tied-spawner".into())
            .spawn(move || {
                for (cmd, log, reply) in rx {
                    let _ = reply.send(spawn_with_pdeathsig(cmd, &log));
                }
            });
        std::sync::Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .send((cmd, log.to_path_buf(), reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread gone"))?
}

fn spawn_with_pdeathsig(cmd: Command, log: &Path) -> std::io::Result<Child> {
    let out = fs::File::create(log)?;
    let err = out.try_clone()?;
    if !Path::new("/usr/bin/setpriv").exists() {
        let mut cmd = cmd;
        return cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn();
    }
    let mut wrapped = Command::new("/usr/bin/setpriv");
    wrapped
        .arg("--pdeathsig")
        .arg("KILL")
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped.stdin(Stdio::null()).stdout(out).stderr(err);
    wrapped.spawn()
}
