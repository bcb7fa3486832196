//! `chainctl image build`: a FROM-scratch image from our static binary, made and run on
//! this machine's Docker engine without any registry. A dynamically linked binary is
//! refused with the command that builds a static one.

use crate::util::{bin, static_binary, text};
use std::process::Command;

fn docker(args: &[&str]) -> std::process::Output {
    let o = Command::new("docker")
        .args(args)
        .output()
        .expect("docker is not installed: this test needs the Docker engine");
    o
}

#[test]
fn a_dynamic_binary_is_refused_with_the_fix() {
    let _engine = crate::util::docker_engine();
    let o = Command::new(bin())
        .args(["image", "build"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(
        e.contains("is dynamically linked") && e.contains("target-feature=+crt-static"),
        "{e}"
    );
}

#[test]
fn image_from_the_static_binary_runs_with_no_base_image() {
    let _engine = crate::util::docker_engine();
    let binary = static_binary();
    assert_eq!(
        chainctl_runtime::image::interpreter(&binary).unwrap(),
        None,
        "{binary:?} must be static"
    );
    let tag = format!("chainctl-test:{}", std::process::id());
    let o = Command::new(&binary)
        .args(["image", "build", "--tag", &tag])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(&format!("built {tag} (sha256:")),
        "{}",
        text(&o.stdout)
    );
    let cleanup = || {
        docker(&["rmi", "-f", &tag]);
    };
    let run = docker(&["run", "--rm", "--network", "none", &tag, "--version"]);
    let schema = docker(&["run", "--rm", "--network", "none", &tag, "schema"]);
    let inspect = docker(&["image", "inspect", "--format", "{{json .Config}}", &tag]);
    let history = docker(&["image", "history", "--format", "{{.Size}}", &tag]);
    // The file system: the binary and an empty /tmp with the sticky bit, nothing else.
    let created = docker(&["create", &tag]);
    let id = text(&created.stdout).trim().to_string();
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {id} | tar -tvf -"))
        .output()
        .unwrap();
    docker(&["rm", "-f", &id]);
    cleanup();
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(
        text(&run.stdout).trim(),
        format!("chainctl {}", env!("CARGO_PKG_VERSION"))
    );
    let schema: serde_json::Value =
        serde_json::from_slice(&schema.stdout).expect("schema JSON from the container");
    assert_eq!(schema["title"], "Profile");
    let config: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(config["User"], "65532:65532", "not root");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/chainctl"]));
    assert_eq!(
        text(&history.stdout).lines().count(),
        1,
        "one layer: the binary alone"
    );
    let listing = text(&listing.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("drwxrwxrwt") && l.trim_end().ends_with("tmp/")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.trim_end().ends_with("chainctl")),
        "{listing}"
    );
}
