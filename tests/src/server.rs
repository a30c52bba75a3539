//! A static file server on 127.0.0.1 for the built page, recording every request it gets.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

pub struct StaticServer {
    pub url: String,
    /// (method, path) of every request, in order.
    pub requests: Arc<Mutex<Vec<(String, String)>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<thread::JoinHandle<()>>,
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "png" => "image/png",
        "gz" => "application/gzip",
        _ => "application/octet-stream",
    }
}

/// `/a/b?x` → root/a/b, refusing anything that climbs out of root.
fn resolve(root: &Path, url: &str) -> Option<PathBuf> {
    let path = url.split(['?', '#']).next().unwrap_or("/");
    let mut out = root.to_path_buf();
    for c in Path::new(path.trim_start_matches('/')).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if out.is_dir() {
        out.push("index.html");
    }
    Some(out)
}

/// The headers a site's `_headers` file asks for every path (`/*`), as Netlify and Cloudflare
/// Pages send them: the page's is the one that gives its worker a Content-Security-Policy.
fn site_headers(root: &Path) -> Vec<tiny_http::Header> {
    let Ok(text) = std::fs::read_to_string(root.join("_headers")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut every_path = false;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            every_path = line.trim() == "/*";
        } else if every_path && let Some((name, value)) = line.trim().split_once(':') {
            out.push(tiny_http::Header::from_bytes(name.trim(), value.trim()).expect("a header"));
        }
    }
    out
}

impl StaticServer {
    pub fn start(root: &Path) -> StaticServer {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1"));
        let headers = site_headers(root);
        let port = server.server_addr().to_ip().expect("ip address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (s, log, root) = (server.clone(), requests.clone(), root.to_path_buf());
        let thread = thread::spawn(move || {
            for request in s.incoming_requests() {
                let method = request.method().to_string();
                let url = request.url().to_string();
                log.lock().unwrap().push((method.clone(), url.clone()));
                let file = resolve(&root, &url).filter(|p| p.is_file());
                let response = match (method.as_str(), file) {
                    ("GET", Some(path)) => match std::fs::read(&path) {
                        Ok(bytes) => headers.iter().fold(
                            tiny_http::Response::from_data(bytes).with_header(
                                tiny_http::Header::from_bytes("Content-Type", mime(&path))
                                    .expect("header"),
                            ),
                            |response, h| response.with_header(h.clone()),
                        ),
                        Err(_) => tiny_http::Response::from_data(Vec::new()).with_status_code(500),
                    },
                    ("GET", None) => {
                        tiny_http::Response::from_data(Vec::new()).with_status_code(404)
                    }
                    _ => tiny_http::Response::from_data(Vec::new()).with_status_code(405),
                };
                let _ = request.respond(response);
            }
        });
        StaticServer {
            url: format!("http://127.0.0.1:{port}"),
            requests,
            server,
            thread: Some(thread),
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
