//! `batchgen sim` as a user runs it: prints its address, checks keys, stops on Ctrl-C.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

struct Sim {
    child: Child,
    url: String,
}

impl Sim {
    fn start(args: &[&str], env_key: Option<&str>) -> Sim {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchgen"));
        cmd.arg("sim")
            .args([
                "--port",
                "0",
                "--min-latency-ms",
                "0",
                "--max-latency-ms",
                "0",
            ])
            .args(args)
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(k) = env_key {
            cmd.env("PIXAZO_API_KEY", k);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Sim { child, url }
    }

    async fn submit(&self, key: Option<&str>) -> u16 {
        let mut req = reqwest::Client::new()
            .post(format!("{}/glm-image/v1/glm-image-request", self.url))
            .json(&serde_json::json!({"prompt": "cat", "image_size": {"width": 32, "height": 32}}));
        if let Some(k) = key {
            req = req.header("Ocp-Apim-Subscription-Key", k);
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// Ctrl-C, then everything it printed.
    fn interrupt(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        let status = self.child.wait().unwrap();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (status.code(), out)
    }
}

#[tokio::test]
async fn any_non_empty_key_when_none_is_set() {
    let sim = Sim::start(&[], None);
    assert_eq!(sim.submit(None).await, 401);
    assert_eq!(sim.submit(Some("anything")).await, 200);
    let (code, out) = sim.interrupt();
    assert_eq!(code, Some(0));
    assert!(out.contains("stopped; ledger"), "{out}");
    assert!(out.contains("\"accepted\":1"), "{out}");
}

#[tokio::test]
async fn only_the_given_key_when_one_is_set() {
    let sim = Sim::start(&["--key", "k-flag"], None);
    assert_eq!(sim.submit(Some("other")).await, 401);
    assert_eq!(sim.submit(Some("k-flag")).await, 200);
    sim.interrupt();

    let sim = Sim::start(&[], Some("k-env"));
    assert_eq!(sim.submit(Some("k-flag")).await, 401);
    assert_eq!(sim.submit(Some("k-env")).await, 200);
    let (_, out) = sim.interrupt();
    assert!(!out.contains("k-env"), "the key is never printed: {out}");
}

#[test]
fn help_documents_every_fault_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_batchgen"))
        .args(["sim", "--help"])
        .env("PIXAZO_API_KEY", "sk-hidden-in-help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--port",
        "--key",
        "--min-latency-ms",
        "--max-latency-ms",
        "--submit-shape",
        "--status-shape",
        "--submit-5xx-rate",
        "--status-5xx-rate",
        "--download-5xx-rate",
        "--truncate-rate",
        "--failed-rate",
        "--error-rate",
        "--rate-limit",
        "--retry-after-secs",
        "--wallet-usd",
        "--price-text-to-image",
        "--price-image-to-image",
        "--submit-502-rate",
        "--submit-hang-rate",
        "--submit-redirect-rate",
        "--status-redirect-rate",
        "--redirect-to",
        "--oversized-rate",
        "--extra-images",
        "--fault-seed",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(
        !help.contains("sk-hidden-in-help"),
        "help must not show the key"
    );
}
