//! Which file a request path names: only regular files whose real path (every symbolic link
//! resolved) stays inside the folder the path asks for, and no file or folder whose name starts
//! with `.`. Anything else is "not served", whether or not it exists.

use std::path::{Path, PathBuf};

/// The two folders `carve serve` answers from, canonical (every symbolic link resolved).
#[derive(Debug)]
pub struct Roots {
    /// The built web app, served at `/`.
    pub app: PathBuf,
    /// The run directory, served at `/run/`.
    pub run: PathBuf,
}

/// A request path split into the folder it asks for and the names below it, each percent-decoded
/// once.
#[derive(Debug, PartialEq)]
pub struct Wanted {
    /// `/run/…` rather than the app.
    pub in_run: bool,
    /// The names below that folder, the file's last.
    pub names: Vec<String>,
}

/// Splits `path` (the URL path, without query) into a folder and names: `/` is the app's
/// `index.html`, `/run/…` the run directory, anything else the app. Checks that the path starts
/// with `/`, names a file (no empty name, no trailing `/`), and that every name, once
/// percent-decoded, is valid UTF-8 without `/`, `\` or NUL and does not start with `.` (which
/// refuses `.`, `..` and dotfiles). `None` when any check fails.
pub fn wanted(path: &str) -> Option<Wanted> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Wanted { in_run: false, names: vec!["index.html".into()] });
    }
    let (in_run, rest) = match rest.strip_prefix("run") {
        Some("") => (true, ""),
        Some(r) if r.starts_with('/') => (true, &r[1..]),
        _ => (false, rest),
    };
    if rest.is_empty() {
        return None;
    }
    let names = rest.split('/').map(decoded_name).collect::<Option<Vec<_>>>()?;
    Some(Wanted { in_run, names })
}

/// One path segment percent-decoded, when it is a name `wanted` accepts.
fn decoded_name(segment: &str) -> Option<String> {
    let name = percent_decode(segment)?;
    let bad = name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']);
    (!bad).then_some(name)
}

/// `%XX` escapes decoded; `None` for a malformed escape (`%`, `%4`, `%zz`) or bytes that are not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Roots {
    /// The roots of `app` and `run`, canonical; errors name the folder that cannot be resolved.
    pub fn new(app: &Path, run: &Path) -> anyhow::Result<Roots> {
        use anyhow::Context;
        let canon = |p: &Path| std::fs::canonicalize(p).with_context(|| format!("cannot resolve {}", p.display()));
        Ok(Roots { app: canon(app)?, run: canon(run)? })
    }

    /// The real path and length of the file `w` names, when it is served: it exists, resolves
    /// (through any symbolic links) to a regular file inside the same root, and no name between
    /// that root and the resolved file starts with `.`.
    pub async fn resolve(&self, w: &Wanted) -> Option<(PathBuf, u64)> {
        let root = if w.in_run { &self.run } else { &self.app };
        let asked: PathBuf = w.names.iter().fold(root.clone(), |p, n| p.join(n));
        let real = tokio::fs::canonicalize(&asked).await.ok()?;
        let inside = real.strip_prefix(root).ok()?;
        if inside.as_os_str().is_empty() || inside.iter().any(|n| n.as_encoded_bytes().starts_with(b".")) {
            return None;
        }
        let meta = tokio::fs::metadata(&real).await.ok().filter(|m| m.is_file())?;
        Some((real, meta.len()))
    }
}

/// The content type of a file, by the extension of the name it was requested as.
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        // RFC 9239: text/javascript is the JavaScript media type (application/javascript is obsolete).
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "jsonl" => "application/jsonl",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "md" => "text/markdown; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &str) -> Option<(bool, Vec<String>)> {
        wanted(p).map(|w| (w.in_run, w.names))
    }

    #[test]
    fn paths_name_a_folder_and_its_files() {
        assert_eq!(names("/"), Some((false, vec!["index.html".into()])));
        assert_eq!(names("/carve_web.js"), Some((false, vec!["carve_web.js".into()])));
        assert_eq!(names("/run/model/config.json"), Some((true, vec!["model".into(), "config.json".into()])));
        assert_eq!(names("/runner.js"), Some((false, vec!["runner.js".into()])));
        assert_eq!(names("/run/a%20b.json"), Some((true, vec!["a b.json".into()])));
        // Decoded once: `%252e` is the name `%2e`, not `.`.
        assert_eq!(names("/run/%252e%252e"), Some((true, vec!["%2e%2e".into()])));
    }

    #[test]
    fn escapes_dotfiles_and_folders_are_refused() {
        for p in [
            "", "run", "/run", "/run/", "/run/model/", "//etc/passwd", "/run//x", "/../x", "/run/../x", "/run/%2e%2e/x",
            "/run/%2E%2E", "/run/..%2fx", "/run/a%2Fb", "/run/a%5cb", "/run/a%00", "/.env", "/run/.git/config",
            "/run/model/.hidden", "/run/%2egit", "/run/%", "/run/%4", "/run/%zz", "/run/%ff",
        ] {
            assert_eq!(names(p), None, "{p:?}");
        }
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("carve_web_bg.wasm"), "application/wasm");
        assert_eq!(content_type("carve_web.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("circuit.json"), "application/json");
        assert_eq!(content_type("model.safetensors"), "application/octet-stream");
        assert_eq!(content_type("README"), "application/octet-stream");
    }
}
