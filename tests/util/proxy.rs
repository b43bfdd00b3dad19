//! A small HTTP/1.1 proxy on 127.0.0.1 that sits in front of a real S3 server and lies on
//! purpose: it flips a byte of a request or an answer body, cuts an answer short, replaces an
//! answer, rewrites a header, or drops the connection halfway through a request. Each fault
//! applies to the requests a [`Rule`] matches, a given number of times.
//!
//! It understands just enough HTTP for the S3 client: requests and answers with a
//! `Content-Length` body (answers with `Transfer-Encoding: chunked` are de-chunked and sent on
//! with a `Content-Length`), one upstream connection per request, keep-alive towards the client.
//! [`Proxy::start_tls`] serves https instead, terminating TLS in front of a plain-http server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// What to do to a matched request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Flip one byte in the middle of the request body before it reaches the server.
    FlipRequestBody,
    /// Flip one byte in the middle of the answer body.
    FlipResponseBody,
    /// Send only the first half of the answer body, then close.
    TruncateResponse,
    /// Answer this instead of the server's answer (status, body).
    Replace(u16, String),
    /// Set this header of the server's answer to this value.
    Header(&'static str, String),
    /// Read half the request body, then close the connection without an answer.
    Drop,
}

/// Which requests a fault applies to, and how many times.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The method (`PUT`, `GET`, `POST`, `HEAD`, ...).
    pub method: &'static str,
    /// A text the request target (path and query) must contain.
    pub contains: &'static str,
    /// What to do.
    pub fault: Fault,
    /// How many matching requests get it (after that they pass).
    pub times: u32,
}

/// A running proxy; it stops with the test process.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    /// Request lines seen, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Starts a proxy in front of `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Proxy {
        Proxy::start_with(upstream, None)
    }

    /// Starts a proxy that serves https with `acceptor`'s certificate in front of `upstream`
    /// (plain http); its endpoint is `https://127.0.0.1:PORT`. A handshake the client refuses
    /// ends that connection only.
    #[allow(dead_code)]
    pub fn start_tls(upstream: &str, acceptor: native_tls::TlsAcceptor) -> Proxy {
        Proxy::start_with(upstream, Some(Arc::new(acceptor)))
    }

    fn start_with(upstream: &str, tls: Option<Arc<native_tls::TlsAcceptor>>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, s, up) = (rules.clone(), seen.clone(), upstream.to_owned());
        let scheme = if tls.is_some() { "https" } else { "http" };
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (r, s, up, tls) = (r.clone(), s.clone(), up.clone(), tls.clone());
                thread::spawn(move || match tls {
                    None => serve(conn, &up, &r, &s),
                    Some(acceptor) => {
                        if let Ok(conn) = acceptor.accept(conn) {
                            serve(conn, &up, &r, &s);
                        }
                    }
                });
            }
        });
        Proxy {
            endpoint: format!("{scheme}://127.0.0.1:{port}"),
            rules,
            seen,
        }
    }

    /// Adds a rule.
    pub fn add(&self, rule: Rule) {
        self.rules.lock().unwrap().push(rule);
    }

    /// Forgets every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }
}

/// One HTTP message head and body.
struct Message {
    head: Vec<String>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<String> {
        self.head.iter().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn set_header(&mut self, name: &str, value: &str) {
        self.head.retain(|l| {
            !l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        });
        self.head.push(format!("{name}: {value}"));
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.head.join("\r\n").into_bytes();
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// Reads a head (up to the empty line); `None` at a clean end of stream.
fn read_head(r: &mut impl BufRead) -> Option<Vec<String>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            return (!head.is_empty()).then_some(head);
        }
        head.push(line);
    }
}

fn read_body(r: &mut impl BufRead, m: &mut Message, head_request: bool) -> std::io::Result<()> {
    if head_request {
        return Ok(());
    }
    if m.header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            m.body.extend_from_slice(&chunk[..n]);
        }
        m.head
            .retain(|l| !l.to_ascii_lowercase().starts_with("transfer-encoding"));
        let len = m.body.len().to_string();
        m.set_header("Content-Length", &len);
        return Ok(());
    }
    let len: usize = m
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    m.body = vec![0u8; len];
    r.read_exact(&mut m.body)
}

fn take_rule(rules: &Mutex<Vec<Rule>>, method: &str, target: &str) -> Option<Fault> {
    let mut rules = rules.lock().unwrap();
    let rule = rules
        .iter_mut()
        .find(|r| r.times > 0 && r.method == method && target.contains(r.contains))?;
    rule.times -= 1;
    Some(rule.fault.clone())
}

fn flip(body: &mut [u8]) {
    if let Some(b) = body.get_mut(body.len() / 2) {
        *b ^= 0x01;
    }
}

/// Serves one client connection, request after request.
fn serve(
    conn: impl Read + Write,
    upstream: &str,
    rules: &Mutex<Vec<Rule>>,
    seen: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(conn);
    while let Some(head) = read_head(&mut reader) {
        let mut req = Message {
            head,
            body: Vec::new(),
        };
        let line = req.head[0].clone();
        seen.lock().unwrap().push(line.clone());
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("").to_owned();
        let fault = take_rule(rules, &method, &target);
        if matches!(fault, Some(Fault::Drop)) {
            let len: usize = req
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut half = vec![0u8; len / 2];
            let _ = reader.read_exact(&mut half);
            return;
        }
        if read_body(&mut reader, &mut req, false).is_err() {
            return;
        }
        if matches!(fault, Some(Fault::FlipRequestBody)) {
            flip(&mut req.body);
        }
        let Some(mut answer) = forward(&req, upstream, method == "HEAD") else {
            return;
        };
        match fault {
            Some(Fault::FlipResponseBody) => flip(&mut answer.body),
            Some(Fault::Replace(status, body)) => {
                answer.head[0] = format!("HTTP/1.1 {status} Replaced");
                answer.body = body.into_bytes();
                let len = answer.body.len().to_string();
                answer.set_header("Content-Length", &len);
            }
            Some(Fault::Header(name, value)) => answer.set_header(name, &value),
            Some(Fault::TruncateResponse) => {
                let bytes = answer.bytes();
                let cut = bytes.len() - answer.body.len() / 2;
                let _ = reader.get_mut().write_all(&bytes[..cut]);
                return;
            }
            _ => {}
        }
        if reader.get_mut().write_all(&answer.bytes()).is_err() {
            return;
        }
    }
}

/// Sends `req` to the server on a new connection and reads its answer.
fn forward(req: &Message, upstream: &str, head_request: bool) -> Option<Message> {
    let mut up = TcpStream::connect(upstream).ok()?;
    let mut sent = Message {
        head: req.head.clone(),
        body: req.body.clone(),
    };
    sent.set_header("Connection", "close");
    up.write_all(&sent.bytes()).ok()?;
    let mut reader = BufReader::new(up);
    let head = read_head(&mut reader)?;
    let mut answer = Message {
        head,
        body: Vec::new(),
    };
    read_body(&mut reader, &mut answer, head_request).ok()?;
    answer
        .head
        .retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    Some(answer)
}
