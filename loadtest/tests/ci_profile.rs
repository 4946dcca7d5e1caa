//! The small profile of the load test, run in CI: a few thousand namespaces, 2 replicas, label
//! bursts, a BlockRequest, and one `kill -9` failover while lock/unlock traffic keeps flowing.
//! Fails on lost work (a requested lock or unlock that never completed, a final state that
//! disagrees with the label, workloads not restored) and on overlapping ownership (a controller
//! write outside the writer's ownership epoch, from the API server's audit log).
//!
//! It drives the `loadtest` binary, which starts its own control plane and the `block-controller`
//! binary next to it (`cargo test --workspace` builds both).

use std::process::Command;

#[test]
fn small_profile_with_a_failover_loses_nothing_and_never_overlaps() {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_loadtest"));
    let controller = exe.with_file_name("block-controller");
    assert!(
        controller.exists() || std::env::var_os("BLOCK_CONTROLLER_BIN").is_some(),
        "{} is missing: run the workspace's tests (`cargo test --workspace`) or `cargo build -p block-controller` first",
        controller.display()
    );
    let out = std::env::temp_dir().join(format!("loadtest-ci-{}", std::process::id()));
    let status = Command::new(exe)
        .args([
            "run",
            "--namespaces=2000",
            "--replicas=2",
            "--workload-fraction=0.02",
            "--ranges=64",
            "--scenarios=burst,blockrequest,kill",
            "--burst-fraction=0.05",
            "--blockrequest-size=200",
            "--trickle-rate=5",
            "--trickle-namespaces=40",
            "--create-rate=1000",
            "--sample-interval=500ms",
            "--scenario-timeout=3m",
            "--population=ltci",
        ])
        .arg(format!("--out={}", out.display()))
        .args([
            "--controller-arg=--lease-duration=6s",
            "--controller-arg=--renew-deadline=4s",
            "--controller-arg=--retry-period=1s",
            "--controller-arg=--api-timeout=1500ms",
            "--controller-arg=--kube-api-qps=200",
            "--controller-arg=--kube-api-burst=400",
        ])
        .status()
        .expect("running loadtest");
    let result: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("result.json")).expect("result.json written"),
    )
    .expect("result.json parses");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap_or_default();
    assert!(status.success(), "the load test failed:\n{report}");
    assert_eq!(result["passed"], true, "{report}");
    // The checks really ran: the audit log was read and held controller writes of both replicas.
    assert_eq!(result["audit"]["available"], true, "{report}");
    assert_eq!(result["audit"]["violations"], 0, "{report}");
    let by_replica = result["audit"]["writes_by_replica"]
        .as_object()
        .expect("writes by replica");
    assert!(by_replica.len() >= 2, "writes of both replicas: {report}");
    let steps = result["steps"].as_array().expect("steps");
    for name in [
        "burst-lock",
        "burst-unlock",
        "blockrequest-lock",
        "blockrequest-unlock",
        "trickle",
    ] {
        let s = steps
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("step {name} missing: {report}"));
        assert_eq!(s["lost"], 0, "{name}: {report}");
        assert!(s["completed"].as_u64() > Some(0), "{name}: {report}");
    }
    let kill = result["faults"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "kill -9"))
        .unwrap_or_else(|| panic!("no failover measured: {report}"));
    assert_eq!(kill["waited"]["reached"], true, "{report}");
    for svg in ["latency.svg", "memory.svg", "api-calls.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).expect("chart written");
        assert!(
            text.starts_with("<svg") && text.contains("polyline"),
            "{svg}"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
