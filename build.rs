//! Records the git commit the binaries are built from, for `--version`.

fn main() {
    let from_git = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty());
    // Outside a git checkout (a source tarball), the builder may say.
    let commit = from_git
        .or_else(|| std::env::var("KINESIS_STREAMING_COMMIT").ok())
        .unwrap_or_else(|| "commit unknown".into());
    println!("cargo:rustc-env=KINESIS_STREAMING_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=KINESIS_STREAMING_COMMIT");
    for f in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        println!("cargo:rerun-if-changed={f}");
    }
}
