//! Headless Chromium driven through the Chrome DevTools Protocol over its WebSocket: launch,
//! open a page, evaluate, set file inputs, screenshots, downloads, and a record of every
//! network request made by the page and its workers.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub type Result<T> = std::result::Result<T, String>;

/// A network request seen by the browser.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    /// `page`, `worker`, `service_worker`, ... (the type of the target that made it).
    pub target: String,
}

pub struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Events not consumed yet.
    events: Vec<Value>,
    /// Session id → target type.
    sessions: Vec<(String, String)>,
    pub requests: Vec<Request>,
    pub console: Vec<String>,
    /// Script run in each Web Worker before its own (as a browser without some feature would
    /// look to the page's worker).
    pub worker_prelude: Option<String>,
    _profile: tempfile::TempDir,
}

/// How Chromium runs WebGPU here: on the CPU through SwiftShader.
pub const WEBGPU_FLAGS: &[&str] = &[
    "--enable-unsafe-webgpu",
    "--use-webgpu-adapter=swiftshader",
    "--enable-features=Vulkan",
];

/// Flags that leave the browser without WebGPU (the CPU fallback).
pub const NO_WEBGPU_FLAGS: &[&str] = &["--disable-blink-features=WebGPU", "--disable-gpu"];

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in ["/usr/bin", "/usr/local/bin", "/snap/bin"] {
            let p = Path::new(dir).join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("Chromium is not installed (scripts/setup.sh installs the Debian package `chromium`)");
}

impl Browser {
    pub fn launch(flags: &[&str]) -> Result<Browser> {
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-sync",
                "--window-size=1280,1600",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(flags)
            // Extra flags for a benchmark run by hand, e.g. V8's profiler:
            // NVNET_CHROMIUM_FLAGS='--js-flags=--prof --no-sandbox'.
            .args(
                std::env::var("NVNET_CHROMIUM_FLAGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting Chromium: {e}"))?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if !sent && let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_string());
                    sent = true;
                }
                // Keep draining so that Chromium never blocks on a full pipe.
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| "Chromium did not print its DevTools address".to_string())?;
        let (ws, _) =
            tungstenite::connect(url.as_str()).map_err(|e| format!("CDP connect: {e}"))?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
        }
        let mut b = Browser {
            child,
            ws,
            next_id: 1,
            events: Vec::new(),
            sessions: Vec::new(),
            requests: Vec::new(),
            console: Vec::new(),
            worker_prelude: None,
            _profile: profile,
        };
        // Service workers are separate targets: attach to each as it appears.
        b.call(None, "Target.setDiscoverTargets", json!({"discover": true}))?;
        Ok(b)
    }

    fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .map_err(|e| format!("CDP send {method}: {e}"))?;
        Ok(id)
    }

    /// One message, or None after the read timeout.
    fn read(&mut self) -> Result<Option<Value>> {
        match self.ws.read() {
            Ok(Message::Text(t)) => serde_json::from_str(t.as_str())
                .map(Some)
                .map_err(|e| e.to_string()),
            Ok(_) => Ok(None),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(format!("CDP read: {e}")),
        }
    }

    /// Handle events that the browser object itself answers (attaching to workers, recording
    /// requests); keep the rest.
    fn on_event(&mut self, ev: Value) -> Result<()> {
        let method = ev["method"].as_str().unwrap_or("");
        let session = ev["sessionId"].as_str().map(str::to_string);
        match method {
            "Target.attachedToTarget" => {
                let sid = ev["params"]["sessionId"].as_str().unwrap_or("").to_string();
                let kind = ev["params"]["targetInfo"]["type"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if kind == "worker"
                    && let Some(prelude) = &self.worker_prelude
                {
                    // Paused at its start (waitForDebuggerOnStart): this runs first.
                    let expression = prelude.clone();
                    self.send(
                        Some(&sid),
                        "Runtime.evaluate",
                        json!({ "expression": expression }),
                    )?;
                }
                self.sessions.push((sid.clone(), kind));
                self.send(Some(&sid), "Network.enable", json!({}))?;
                self.send(Some(&sid), "Runtime.enable", json!({}))?;
                self.send(
                    Some(&sid),
                    "Target.setAutoAttach",
                    json!({"autoAttach": true, "waitForDebuggerOnStart": true, "flatten": true}),
                )?;
                self.send(Some(&sid), "Runtime.runIfWaitingForDebugger", json!({}))?;
            }
            "Target.targetCreated" => {
                let info = &ev["params"]["targetInfo"];
                if info["type"] == "service_worker" {
                    let target = info["targetId"].as_str().unwrap_or("").to_string();
                    self.send(
                        None,
                        "Target.attachToTarget",
                        json!({"targetId": target, "flatten": true}),
                    )?;
                }
            }
            "Network.requestWillBeSent" => {
                let target = session
                    .and_then(|s| self.sessions.iter().find(|(id, _)| *id == s))
                    .map(|(_, k)| k.clone())
                    .unwrap_or_default();
                self.requests.push(Request {
                    method: ev["params"]["request"]["method"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    url: ev["params"]["request"]["url"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    target,
                });
            }
            "Runtime.consoleAPICalled" => {
                let text: Vec<String> = ev["params"]["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| {
                                x["value"]
                                    .as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| x["description"].to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.console.push(text.join(" "));
            }
            "Runtime.exceptionThrown" => {
                self.console.push(format!(
                    "exception: {}",
                    ev["params"]["exceptionDetails"]["exception"]["description"]
                ));
            }
            _ => self.events.push(ev),
        }
        Ok(())
    }

    /// Call a method and wait for its answer (events that arrive meanwhile are handled).
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let id = self.send(session, method, params)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Some(msg) = self.read()? {
                if msg["id"].as_u64() == Some(id) {
                    if let Some(e) = msg.get("error") {
                        return Err(format!("{method}: {e}"));
                    }
                    return Ok(msg["result"].clone());
                } else if msg.get("method").is_some() {
                    self.on_event(msg)?;
                }
            }
        }
        Err(format!("{method}: no answer in 120 s"))
    }

    /// Handle whatever arrived, for about `d`.
    pub fn pump(&mut self, d: Duration) -> Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if let Some(msg) = self.read()?
                && msg.get("method").is_some()
            {
                self.on_event(msg)?;
            }
        }
        Ok(())
    }

    /// Open a new tab on about:blank, instrumented (network of the page and its workers,
    /// downloads into `downloads`).
    pub fn new_page(&mut self, downloads: &Path) -> Result<Page> {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let target = target["targetId"].as_str().unwrap_or("").to_string();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )?;
        let session = attached["sessionId"].as_str().unwrap_or("").to_string();
        self.sessions.push((session.clone(), "page".into()));
        for m in [
            "Page.enable",
            "Network.enable",
            "Runtime.enable",
            "DOM.enable",
        ] {
            self.call(Some(&session), m, json!({}))?;
        }
        self.call(
            Some(&session),
            "Target.setAutoAttach",
            json!({"autoAttach": true, "waitForDebuggerOnStart": true, "flatten": true}),
        )?;
        self.call(
            None,
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": downloads.display().to_string(), "eventsEnabled": true}),
        )?;
        Ok(Page { session, target })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.send(None, "Browser.close", json!({}));
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Page {
    pub session: String,
    target: String,
}

impl Page {
    /// Close the tab and wait until the browser reports it gone: every request the page and its
    /// workers sent before is then recorded.
    pub fn close(self, b: &mut Browser) -> Result<()> {
        b.call(None, "Target.closeTarget", json!({"targetId": self.target}))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let gone = |ev: &Value| {
            ev["method"] == "Target.targetDestroyed" && ev["params"]["targetId"] == self.target
        };
        while !b.events.iter().any(gone) {
            if Instant::now() > deadline {
                return Err("the page was not closed within 30 s".into());
            }
            b.pump(Duration::from_millis(100))?;
        }
        Ok(())
    }

    pub fn navigate(&self, b: &mut Browser, url: &str) -> Result<()> {
        b.call(Some(&self.session), "Page.navigate", json!({"url": url}))?;
        self.wait_for(
            b,
            "document.readyState === 'complete'",
            Duration::from_secs(60),
        )?;
        Ok(())
    }

    /// Evaluate a JS expression (promises awaited), its value.
    pub fn eval(&self, b: &mut Browser, expr: &str) -> Result<Value> {
        let r = b.call(
            Some(&self.session),
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("{expr}: {e}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Poll `expr` until it is truthy; its value.
    pub fn wait_for(&self, b: &mut Browser, expr: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(b, expr)?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(x) => *x,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(format!("timed out after {timeout:?} waiting for {expr}"));
            }
            b.pump(Duration::from_millis(500))?;
        }
    }

    /// The text of the element with `data-testid`.
    pub fn text(&self, b: &mut Browser, testid: &str) -> Result<String> {
        Ok(self
            .eval(
                b,
                &format!("document.querySelector('[data-testid={testid}]')?.textContent ?? ''"),
            )?
            .as_str()
            .unwrap_or("")
            .to_string())
    }

    pub fn click(&self, b: &mut Browser, testid: &str) -> Result<()> {
        self.eval(
            b,
            &format!("document.querySelector('[data-testid={testid}]').click(), true"),
        )?;
        Ok(())
    }

    /// Choose files in the `<input type=file>` with `data-testid` (as a person would).
    pub fn set_files(&self, b: &mut Browser, testid: &str, files: &[PathBuf]) -> Result<()> {
        let doc = b.call(Some(&self.session), "DOM.getDocument", json!({}))?;
        let node = b.call(
            Some(&self.session),
            "DOM.querySelector",
            json!({"nodeId": doc["root"]["nodeId"], "selector": format!("[data-testid={testid}]")}),
        )?;
        let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        b.call(
            Some(&self.session),
            "DOM.setFileInputFiles",
            json!({"files": paths, "nodeId": node["nodeId"]}),
        )?;
        Ok(())
    }

    pub fn screenshot(&self, b: &mut Browser, path: &Path) -> Result<()> {
        let shot = b.call(
            Some(&self.session),
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or(""))
            .map_err(|e| e.to_string())?;
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }
}
