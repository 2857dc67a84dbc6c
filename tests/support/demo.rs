//! Test setups made by `sealgate demo --once`: a complete installation (CA, S/MIME and
//! DKIM keys, example policies, config) that the tool tests start `serve` on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use super::{free_port, SEALGATE, TIMEOUT};

/// Runs `sealgate demo --once` in a fresh temporary directory; returns it and the demo dir.
pub fn demo_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = Command::new(SEALGATE)
        .args(["demo", "--once", "--port"])
        .arg(free_port().to_string())
        .arg("--dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("6 message(s) reached the upstream"),
        "{stdout}"
    );
    assert!(
        stdout.contains("550 5.7.1 <someone@evil.example>: recipient not approved (policies/00-recipients.toml)"),
        "{stdout}"
    );
    (tmp, dir)
}

/// `sealgate serve` on a demo directory; killed on drop.
pub struct DemoServer {
    pub child: Child,
    pub port: u16,
    pub metrics: u16,
    pub stderr: PathBuf,
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rewrites the demo config to listen on a fresh port, with `server_extra` lines in
/// `[server]`, a metrics endpoint and `config_extra` appended; starts `serve` on it.
/// The demo's upstream is gone, so accepted messages stay in the spool.
pub fn serve_demo(dir: &Path, server_extra: &str, config_extra: &str) -> DemoServer {
    let (port, metrics) = (free_port(), free_port());
    let cfg = dir.join("sealgate.toml");
    let c = std::fs::read_to_string(&cfg).unwrap();
    let start = c.find("listen = [").unwrap();
    let end = start + c[start..].find('\n').unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{}listen = [\"127.0.0.1:{port}\"]\n{server_extra}{}\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n{config_extra}",
            &c[..start],
            &c[end + 1..]
        ),
    )
    .unwrap();
    let stderr = dir.join("serve.log");
    let child = Command::new(SEALGATE)
        .args(["serve", "-c", "sealgate.toml"])
        .current_dir(dir)
        .env("SEALGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "serve did not start: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    DemoServer {
        child,
        port,
        metrics,
        stderr,
    }
}
