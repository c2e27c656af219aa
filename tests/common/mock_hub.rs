//! A stand-in for the Hugging Face Hub on 127.0.0.1: just enough of its HTTP API for hf-hub's
//! sync client, so kd's download code runs for real in tests without the network.
//!
//! Served: repo info (`GET /api/{models|datasets}/ID/revision/main`, the `siblings` list kd reads
//! to find a dataset's Parquet shards) and ranged file downloads
//! (`GET /[datasets/]ID/resolve/main/FILE` with the `etag`, `x-repo-commit` and `Content-Range`
//! headers hf-hub needs to place the blob in the cache). Anything else is a 404, as on the Hub.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The commit every served repo claims to be at.
pub const COMMIT: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// A served repository.
pub struct HubRepo {
    /// `models` or `datasets`.
    pub kind: &'static str,
    /// `owner/name`.
    pub id: String,
    /// Path inside the repository, and contents.
    pub files: Vec<(String, Vec<u8>)>,
}

impl HubRepo {
    /// The URL path prefix of file downloads: models sit at the root, datasets under `datasets/`.
    fn url_prefix(&self) -> String {
        match self.kind {
            "models" => format!("/{}/resolve/main/", self.id),
            _ => format!("/{}/{}/resolve/main/", self.kind, self.id),
        }
    }
}

/// A running mock Hub; it serves until the test process exits.
pub struct MockHub {
    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub endpoint: String,
    /// Every request's path, in arrival order.
    requests: Arc<Mutex<Vec<String>>>,
}

impl MockHub {
    pub fn serve(repos: Vec<HubRepo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                // hf-hub asks one thing at a time, so one connection at a time is enough.
                if let Some(path) = answer(stream, &repos) {
                    log.lock().unwrap().push(path);
                }
            }
        });
        Self { endpoint, requests }
    }

    /// The paths requested so far.
    pub fn requested(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request, writes its response, and returns the requested path.
fn answer(stream: TcpStream, repos: &[HubRepo]) -> Option<String> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let path = request_line.split_whitespace().nth(1)?.to_string();
    let mut range = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    let response = respond(repos, &path, range.as_deref());
    let mut stream = stream;
    stream.write_all(&response).ok()?;
    Some(path)
}

fn respond(repos: &[HubRepo], path: &str, range: Option<&str>) -> Vec<u8> {
    for repo in repos {
        if path == format!("/api/{}/{}/revision/main", repo.kind, repo.id) {
            let siblings: Vec<_> = repo
                .files
                .iter()
                .map(|(name, _)| serde_json::json!({ "rfilename": name }))
                .collect();
            let info = serde_json::json!({ "id": repo.id, "sha": COMMIT, "siblings": siblings });
            return http(200, &[], info.to_string().as_bytes());
        }
        let Some(name) = path.strip_prefix(&repo.url_prefix()) else {
            continue;
        };
        let Some((_, body)) = repo.files.iter().find(|(n, _)| n == name) else {
            break;
        };
        let (start, end) = byte_range(range, body.len());
        let etag = format!("\"{:016x}\"", fnv1a(body));
        let content_range = format!("bytes {start}-{end}/{}", body.len());
        let headers = [
            ("ETag", etag.as_str()),
            ("X-Repo-Commit", COMMIT),
            ("Content-Range", content_range.as_str()),
        ];
        return http(206, &headers, &body[start..=end]);
    }
    http(
        404,
        &[("X-Error-Code", "EntryNotFound")],
        b"Entry not found",
    )
}

/// `bytes=S-E` or `bytes=S-` as inclusive offsets into a body of `len` bytes (the whole body
/// without a range).
fn byte_range(range: Option<&str>, len: usize) -> (usize, usize) {
    let spec = range.and_then(|r| r.strip_prefix("bytes="));
    let Some((start, end)) = spec.and_then(|s| s.split_once('-')) else {
        return (0, len - 1);
    };
    let start = start.parse().unwrap_or(0);
    let end = end.parse().map_or(len - 1, |e: usize| e.min(len - 1));
    (start, end)
}

fn http(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        _ => "Not Found",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}
