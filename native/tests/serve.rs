//! `carve serve` over real sockets: only regular files inside the app or run folder are served
//! (symbolic links out, dotfiles and `..` tricks are 404), other `Host`s are refused, ranges give
//! exactly their bytes, a stalled download blocks nothing else, and a broken circuit.json stops the
//! server before it prints a URL.

// Symbolic links and /proc (peak memory) as on Linux, where the server is tested.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `carve serve`, killed when dropped, whether the test passed or not.
struct Server {
    child: Child,
    port: u16,
    /// What it printed before serving.
    printed: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch folder: `app/` (an index.html), `run/` (data.json, sub/) and `outside/secret.txt`
/// beside them, which nothing may serve.
struct Site {
    _tmp: tempfile::TempDir,
    app: PathBuf,
    run: PathBuf,
    outside: PathBuf,
}

const INDEX: &str = "<!doctype html><title>carve</title>";
const SECRET: &str = "TOP SECRET outside the run";
const DATA: &str = "{\"served\": true}";

fn site() -> Site {
    let tmp = tempfile::tempdir().unwrap();
    let (app, run, outside) = (tmp.path().join("app"), tmp.path().join("run"), tmp.path().join("outside"));
    for d in [&app, &run.join("sub"), &outside] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(app.join("index.html"), INDEX).unwrap();
    std::fs::write(run.join("data.json"), DATA).unwrap();
    std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
    Site { _tmp: tmp, app, run, outside }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Starts `carve serve RUN --port 0 --app APP EXTRA…` and waits for the URL it prints.
fn start(site: &Site, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_carve"))
        .args(["serve", s(&site.run), "--port", "0", "--app", s(&site.app)])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("carve runs");
    let out = child.stdout.take().unwrap();
    let mut server = Server { child, port: 0, printed: Vec::new() };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.port == 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|e| panic!("carve serve printed no URL ({e}): {:?}", server.printed));
        if let Some(rest) = line.strip_prefix("http://") {
            let port = rest.trim_end_matches('/').rsplit(':').next().unwrap();
            server.port = port.parse().unwrap_or_else(|_| panic!("a port in {line}"));
            assert_ne!(server.port, 0, "the real port is printed: {line}");
        }
        server.printed.push(line);
    }
    server
}

/// `carve serve ARGS…` that should stop by itself within a minute: (exit status, stdout, stderr).
fn finish(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_carve")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut guard = Server { child, port: 0, printed: Vec::new() };
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = r.read_to_string(&mut text);
            text
        })
    };
    let out = read_all(Box::new(guard.child.stdout.take().unwrap()));
    let err = read_all(Box::new(guard.child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = guard.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "carve {args:?} is still running after a minute");
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn connect(port: u16) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

/// Sends `raw` (a whole request) and reads the reply to the end.
fn send(port: u16, raw: &str) -> Reply {
    let mut c = connect(port);
    c.write_all(raw.as_bytes()).unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("{raw:?}: no HTTP reply in {buf:?}"));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{raw:?}: {head}"));
    Reply { status, head, body: buf[split + 4..].to_vec() }
}

fn request(port: u16, method: &str, path: &str, host: &str, extra: &str) -> Reply {
    send(port, &format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"))
}

fn get(port: u16, path: &str) -> Reply {
    request(port, "GET", path, &format!("127.0.0.1:{port}"), "")
}

fn not_served(port: u16, path: &str) {
    let r = get(port, path);
    assert_eq!(r.status, 404, "{path}: {}", r.head);
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(body, "not found\n", "{path}: the same answer whatever lies there");
}

#[test]
fn the_app_and_run_files_are_served_with_their_types() {
    let site = site();
    std::fs::write(site.app.join("carve_web_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(site.app.join("carve_web.js"), "export default 1;").unwrap();
    let srv = start(&site, &[]);
    assert_eq!(srv.printed.len(), 2, "no circuit.json: no link: {:?}", srv.printed);
    let r = get(srv.port, "/");
    assert_eq!((r.status, r.body.as_slice()), (200, INDEX.as_bytes()), "{}", r.head);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some(INDEX.len().to_string().as_str()), "the page's download progress needs it");
    assert_eq!(get(srv.port, "/carve_web_bg.wasm").header("content-type"), Some("application/wasm"));
    assert_eq!(get(srv.port, "/carve_web.js").header("content-type"), Some("text/javascript; charset=utf-8"));
    let r = get(srv.port, "/run/data.json?v=1");
    assert_eq!((r.status, r.body.as_slice()), (200, DATA.as_bytes()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = request(srv.port, "HEAD", "/run/data.json", "localhost", "");
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-length"), Some(DATA.len().to_string().as_str()));
    assert_eq!(request(srv.port, "POST", "/run/data.json", "localhost", "Content-Length: 0\r\n").status, 405);
    not_served(srv.port, "/run/nothing.json");
}

#[test]
fn symbolic_links_out_of_the_folders_are_not_followed() {
    let site = site();
    let secret = site.outside.join("secret.txt");
    symlink(&secret, site.run.join("leak.txt")).unwrap();
    symlink(&site.outside, site.run.join("outdir")).unwrap();
    symlink(&secret, site.app.join("leak.txt")).unwrap();
    symlink("/etc/passwd", site.run.join("passwd")).unwrap();
    // Inside the other folder is outside this one.
    symlink(site.app.join("index.html"), site.run.join("index.html")).unwrap();
    std::fs::write(site.run.join(".hidden.json"), SECRET).unwrap();
    symlink(site.run.join(".hidden.json"), site.run.join("unhidden.json")).unwrap();
    // Links that stay inside the run are served.
    symlink("data.json", site.run.join("alias.json")).unwrap();
    symlink("../data.json", site.run.join("sub/up.json")).unwrap();
    let srv = start(&site, &[]);
    for path in [
        "/run/leak.txt", "/leak.txt", "/run/outdir/secret.txt", "/run/outdir/missing.txt", "/run/outdir", "/run/passwd",
        "/run/index.html", "/run/unhidden.json",
    ] {
        not_served(srv.port, path);
    }
    for path in ["/run/alias.json", "/run/sub/up.json"] {
        let r = get(srv.port, path);
        assert_eq!((r.status, r.body.as_slice()), (200, DATA.as_bytes()), "{path}: {}", r.head);
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
}

#[test]
fn dotfiles_folders_and_escapes_are_not_served() {
    let site = site();
    std::fs::write(site.run.join(".secret"), SECRET).unwrap();
    std::fs::write(site.app.join(".env"), SECRET).unwrap();
    std::fs::create_dir_all(site.run.join("sub/.git")).unwrap();
    std::fs::write(site.run.join("sub/.git/config.json"), SECRET).unwrap();
    let srv = start(&site, &[]);
    assert_eq!(get(srv.port, "/run/data.json").status, 200);
    for path in [
        "/run/.secret", "/.env", "/run/sub/.git/config.json", "/run/%2esecret", "/run/./data.json", "/run/", "/run", "/run/sub/",
        "/run/sub", "/run//data.json", "/run/../outside/secret.txt", "/../outside/secret.txt", "/run/%2e%2e/outside/secret.txt",
        "/%2E%2E/outside/secret.txt", "/run/%2e%2e%2foutside%2fsecret.txt", "/run/..%2Foutside%2Fsecret.txt",
        "/run/sub/..%2f..%2f..%2foutside/secret.txt", "/run/sub%2f..%2fdata.json", "/run/sub%5c..%5cdata.json",
        "/run/data.json%00", "/run/data.json%00.txt", "/run/%", "/run/data%zz.json",
    ] {
        not_served(srv.port, path);
    }
}

#[test]
fn requests_for_other_hosts_are_refused() {
    let site = site();
    let srv = start(&site, &[]);
    let p = srv.port;
    for host in [format!("127.0.0.1:{p}"), "127.0.0.1".into(), format!("localhost:{p}"), "LocalHost".into(), format!("[::1]:{p}")] {
        let r = request(p, "GET", "/", &host, "");
        assert_eq!((r.status, r.body.as_slice()), (200, INDEX.as_bytes()), "{host}: {}", r.head);
    }
    for host in [format!("evil.example:{p}"), "evil.example".into(), format!("localhost.evil.example:{p}"), format!("10.1.2.3:{p}")] {
        let r = request(p, "GET", "/run/data.json", &host, "");
        assert_eq!(r.status, 403, "{host}: {}", r.head);
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains("--allow-host") && !body.contains("served"), "{host}: {body}");
    }
    let r = send(p, "GET http://evil.example/run/data.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 403, "the URI's host is checked too: {}", r.head);
    assert_eq!(send(p, "GET / HTTP/1.0\r\n\r\n").status, 400, "no Host");
    let two = send(p, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n");
    assert_eq!(two.status, 400, "two Hosts: {}", two.head);
    drop(srv);

    let srv = start(&site, &["--allow-host", "mybox.lan"]);
    assert_eq!(request(srv.port, "GET", "/", &format!("MyBox.lan:{}", srv.port), "").status, 200);
    assert_eq!(request(srv.port, "GET", "/", "otherbox.lan", "").status, 403);
    drop(srv);

    let srv = start(&site, &["--bind", "0.0.0.0"]);
    assert!(srv.printed.iter().any(|l| l == &format!("http://127.0.0.1:{}/", srv.port)), "{:?}", srv.printed);
    assert_eq!(request(srv.port, "GET", "/", &format!("192.0.2.7:{}", srv.port), "").status, 200, "any IP address");
    assert_eq!(request(srv.port, "GET", "/", "evil.example", "").status, 403, "but no other name");
}

/// `len` bytes that differ from one offset to the next over any window a reader might misplace.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i >> 16) as u8).collect()
}

#[test]
fn range_requests_give_exactly_those_bytes() {
    let site = site();
    let data = pattern(1000);
    std::fs::write(site.run.join("model.bin"), &data).unwrap();
    std::fs::write(site.run.join("empty.bin"), b"").unwrap();
    let srv = start(&site, &[]);
    let range = |r: &str| request(srv.port, "GET", "/run/model.bin", "localhost", &format!("Range: {r}\r\n"));
    let whole = get(srv.port, "/run/model.bin");
    assert_eq!((whole.status, whole.body.as_slice()), (200, data.as_slice()));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("content-type"), Some("application/octet-stream"));
    for (spec, from, to) in [("bytes=10-19", 10, 19), ("bytes=990-", 990, 999), ("bytes=-5", 995, 999), ("bytes=0-0", 0, 0), ("bytes=995-5000", 995, 999), ("bytes=-5000", 0, 999)] {
        let r = range(spec);
        assert_eq!(r.status, 206, "{spec}: {}", r.head);
        assert_eq!(r.header("content-range"), Some(format!("bytes {from}-{to}/1000").as_str()), "{spec}");
        assert_eq!(r.header("content-length"), Some((to - from + 1).to_string().as_str()), "{spec}");
        assert_eq!(r.body, &data[from..=to], "{spec}");
    }
    for spec in ["bytes=1000-", "bytes=2000-3000", "bytes=20-10"] {
        let r = range(spec);
        assert_eq!(r.status, 416, "{spec}: {}", r.head);
        assert_eq!(r.header("content-range"), Some("bytes */1000"), "{spec}");
    }
    let r = request(srv.port, "GET", "/run/empty.bin", "localhost", "Range: bytes=0-\r\n");
    assert_eq!((r.status, r.header("content-range"), r.body.len()), (200, None, 0), "an empty file is sent whole: {}", r.head);
    let r = request(srv.port, "HEAD", "/run/model.bin", "localhost", "Range: bytes=10-19\r\n");
    assert_eq!((r.status, r.header("content-length"), r.body.len()), (206, Some("10"), 0));
}

/// VmHWM (peak resident memory) of a process, in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches("kB").trim();
    kb.parse::<u64>().unwrap() * 1024
}

#[test]
fn a_stalled_download_blocks_nothing_else() {
    const SIZE: usize = 64 << 20;
    let site = site();
    let data = pattern(SIZE);
    std::fs::write(site.run.join("model.safetensors"), &data).unwrap();
    let mut srv = start(&site, &[]);
    let before = peak_memory(srv.child.id());

    // The first download stops after a few bytes, its connection left open.
    let mut slow = connect(srv.port);
    write!(slow, "GET /run/model.safetensors HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut first = vec![0u8; 4096];
    slow.read_exact(&mut first).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = get(srv.port, "/run/data.json");
    assert_eq!((r.status, r.body.as_slice()), (200, DATA.as_bytes()), "served while another download stalls");

    // The stalled download then completes with every byte in place.
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).unwrap();
    first.extend(rest);
    let split = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(first.starts_with(b"HTTP/1.1 200"));
    assert_eq!(first.len() - split, SIZE);
    assert!(first[split..] == data[..], "the streamed bytes are the file's");
    let grown = peak_memory(srv.child.id()).saturating_sub(before);
    assert!(grown < (SIZE / 4) as u64, "a {SIZE}-byte file is streamed, not read whole: peak memory grew by {grown} bytes");

    // A client that leaves mid-download does not stop the server.
    for _ in 0..3 {
        let mut gone = connect(srv.port);
        write!(gone, "GET /run/model.safetensors HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        gone.read_exact(&mut [0u8; 1000]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(srv.child.try_wait().unwrap().is_none(), "the server is still running");
    assert_eq!(get(srv.port, "/").status, 200);
}

#[test]
fn a_broken_run_or_app_stops_before_any_url() {
    let site = site();
    let (run, app) = (s(&site.run), s(&site.app));
    // With a model beside it (the circuit's link would open it) and without.
    std::fs::create_dir_all(site.run.join("model")).unwrap();
    std::fs::write(site.run.join("model/config.json"), "{}").unwrap();
    std::fs::write(site.run.join("circuit.json"), "{\"format\": \"carve-circuit\", ").unwrap();
    let (status, out, err) = finish(&["serve", run, "--port", "0", "--app", app]);
    assert!(!status.success(), "a broken circuit.json is an error: {out}{err}");
    assert!(!out.contains("http://"), "no URL is printed: {out}");
    assert!(err.contains("circuit.json") && err.contains("invalid JSON"), "the error names the file: {err}");
    std::fs::remove_dir_all(site.run.join("model")).unwrap();
    std::fs::write(site.run.join("circuit.json"), "{\"format\": \"something-else\"}").unwrap();
    let (status, out, err) = finish(&["serve", run, "--port", "0", "--app", app]);
    assert!(!status.success() && !out.contains("http://") && err.contains("not a circuit file"), "{out}{err}");
    std::fs::remove_file(site.run.join("circuit.json")).unwrap();

    let empty = site.outside.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (status, out, err) = finish(&["serve", run, "--port", "0", "--app", s(&empty)]);
    assert!(!status.success() && !out.contains("http://") && err.contains("no index.html"), "{out}{err}");
    let (status, out, err) = finish(&["serve", run, "--port", "0", "--app", app, "--allow-host", "http://mybox:80"]);
    assert!(!status.success() && !out.contains("http://") && err.contains("--allow-host"), "{out}{err}");

    let srv = start(&site, &[]);
    let port = srv.port.to_string();
    let (status, out, err) = finish(&["serve", run, "--port", &port, "--app", app]);
    assert!(!status.success() && !out.contains("http://"), "a port in use: {out}{err}");
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
}
