//! quinn-legacy-client: speaks debra's legacy protocol exactly like the original debra Rust client,
//! on quinn 0.9 / rustls 0.20, as an independent QUIC implementation for interop tests.
//!
//! quinn-legacy-client --server ADDR:PORT --id N [--to M --send TEXT [--count K]] [--expect E]
//!                     [--timeout SECS]

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use quinn::{ConnectionError, ReadExactError, ReadError, WriteError};
use quinn_legacy_client::wire::{self, Message};
use tokio::sync::mpsc;

const USAGE: &str = "usage: quinn-legacy-client --server ADDR:PORT --id N \
[--to M --send TEXT [--count K]] [--expect E] [--timeout SECS]";

struct Args {
    server: SocketAddr,
    id: i32,
    to: Option<i32>,
    send: Option<String>,
    count: u64,
    expect: u64,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut server = None;
    let mut id = None;
    let mut to = None;
    let mut send = None;
    let mut count = None;
    let mut expect = 0u64;
    let mut timeout = 10.0f64;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            println!("{}", USAGE);
            std::process::exit(0);
        }
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || match inline.clone().or_else(|| it.next()) {
            Some(v) => Ok(v),
            None => Err(format!("{} needs a value", key)),
        };
        fn num<T: std::str::FromStr>(key: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{}: invalid value {:?}", key, v))
        }
        match key.as_str() {
            "--server" => {
                let v = value()?;
                let addr = v
                    .to_socket_addrs()
                    .map_err(|e| format!("--server {:?}: {}", v, e))?
                    .next()
                    .ok_or_else(|| format!("--server {:?}: no address", v))?;
                server = Some(addr);
            }
            "--id" => id = Some(num::<i32>(&key, value()?)?),
            "--to" => to = Some(num::<i32>(&key, value()?)?),
            "--send" => send = Some(value()?),
            "--count" => count = Some(num::<u64>(&key, value()?)?),
            "--expect" => expect = num::<u64>(&key, value()?)?,
            "--timeout" => {
                timeout = num::<f64>(&key, value()?)?;
                if !(timeout > 0.0 && timeout < 1e9) {
                    return Err("--timeout must be a positive number of seconds".to_string());
                }
            }
            _ => return Err(format!("unknown argument {:?}", arg)),
        }
    }
    if to.is_some() != send.is_some() {
        return Err("--to and --send go together".to_string());
    }
    if count.is_some() && send.is_none() {
        return Err("--count needs --to and --send".to_string());
    }
    Ok(Args {
        server: server.ok_or("--server is required")?,
        id: id.ok_or("--id is required")?,
        to,
        send,
        count: count.unwrap_or(1),
        expect,
        timeout: Duration::from_secs_f64(timeout),
    })
}

/// Legacy debra clients do not verify the router's certificate at all.
struct AcceptAnyServerCert;

impl rustls::client::ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::Certificate,
        _intermediates: &[rustls::Certificate],
        _server_name: &rustls::ServerName,
        _scts: &mut dyn Iterator<Item = &[u8]>,
        _ocsp_response: &[u8],
        _now: SystemTime,
    ) -> Result<rustls::client::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::ServerCertVerified::assertion())
    }
}

fn client_config() -> quinn::ClientConfig {
    let mut crypto = rustls::ClientConfig::builder()
        .with_safe_defaults()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert))
        .with_no_client_auth();
    // Legacy protocol: no ALPN at all (alpn_protocols stays empty).
    debug_assert!(crypto.alpn_protocols.is_empty());
    // Honour SSLKEYLOGFILE, handy for looking at an interop failure in Wireshark.
    crypto.key_log = Arc::new(rustls::KeyLogFile::new());
    quinn::ClientConfig::new(Arc::new(crypto))
}

#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    received: AtomicU64,
}

fn describe_conn(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ApplicationClosed(c) => {
            let code = c.error_code.into_inner();
            format!(
                "connection closed by the server: application error code {} ({}), reason {:?}",
                code,
                wire::error_code_name(code),
                String::from_utf8_lossy(&c.reason)
            )
        }
        ConnectionError::ConnectionClosed(c) => {
            format!("connection closed by the server's QUIC stack: {}", c)
        }
        ConnectionError::TimedOut => "connection timed out (idle timeout: no answer from the server)".to_string(),
        other => format!("connection error: {}", other),
    }
}

fn describe_write(e: &WriteError) -> String {
    match e {
        WriteError::ConnectionLost(c) => describe_conn(c),
        WriteError::Stopped(code) => format!(
            "the server stopped the stream (STOP_SENDING) with error code {} ({})",
            code,
            wire::error_code_name(code.into_inner())
        ),
        other => format!("write error: {}", other),
    }
}

async fn write_frame(send: &mut quinn::SendStream, m: &Message) -> Result<(), String> {
    send.write_all(&wire::encode_frame(m)).await.map_err(|e| describe_write(&e))
}

/// Reads deliveries until an error, printing each and reporting it on `events`.
async fn read_loop(
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    events: mpsc::UnboundedSender<Result<(), String>>,
    progress: Arc<Progress>,
) {
    let result = async {
        loop {
            let mut prefix = [0u8; wire::PREFIX_LEN];
            read_exact(&conn, &mut recv, &mut prefix, &progress).await?;
            let len = u64::from_be_bytes(prefix);
            if len > wire::MAX_FRAME_LEN {
                return Err(format!("the server sent a frame length of {} bytes", len));
            }
            let mut body = vec![0u8; len as usize];
            read_exact(&conn, &mut recv, &mut body, &progress).await?;
            let m = wire::decode(&body).map_err(|e| format!("frame from the server: {}", e))?;
            if m.message_type != wire::CLIENT_TO_CLIENT {
                return Err(format!(
                    "the server sent message_type {}, but legacy routers only deliver ClientToClient (1)",
                    m.message_type
                ));
            }
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let _ = writeln!(out, "{}\t{}", m.client_id, String::from_utf8_lossy(m.payload()));
            let _ = out.flush();
            progress.received.fetch_add(1, Ordering::SeqCst);
            if events.send(Ok(())).is_err() {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(e) = result {
        let _ = events.send(Err(e));
    }
}

async fn read_exact(
    conn: &quinn::Connection,
    recv: &mut quinn::RecvStream,
    buf: &mut [u8],
    progress: &Progress,
) -> Result<(), String> {
    match recv.read_exact(buf).await {
        Ok(()) => Ok(()),
        Err(ReadExactError::FinishedEarly) => {
            // A FIN is usually followed by a CONNECTION_CLOSE that tells why: give it a moment.
            match tokio::time::timeout(Duration::from_millis(500), conn.closed()).await {
                Ok(e) => Err(describe_conn(&e)),
                Err(_) => Err(format!(
                    "the server finished its stream (FIN) after {} deliveries",
                    progress.received.load(Ordering::SeqCst)
                )),
            }
        }
        Err(ReadExactError::ReadError(ReadError::ConnectionLost(e))) => Err(describe_conn(&e)),
        Err(ReadExactError::ReadError(ReadError::Reset(code))) => Err(format!(
            "the server reset its stream with error code {} ({})",
            code,
            wire::error_code_name(code.into_inner())
        )),
        Err(ReadExactError::ReadError(e)) => Err(format!("read error: {}", e)),
    }
}

/// Connects, registers, sends, waits for the expected deliveries, and finishes the stream (which
/// completes only once the server acknowledged everything we sent).
async fn session(
    endpoint: &quinn::Endpoint,
    args: &Args,
    progress: Arc<Progress>,
    conn_slot: &mut Option<quinn::Connection>,
) -> Result<(), String> {
    let connecting = endpoint
        .connect(args.server, "localhost")
        .map_err(|e| format!("cannot connect to {}: {}", args.server, e))?;
    let conn = connecting.await.map_err(|e| format!("handshake with {} failed: {}", args.server, describe_conn(&e)))?;
    *conn_slot = Some(conn.clone());
    let (mut send, recv) = conn.open_bi().await.map_err(|e| describe_conn(&e))?;

    let (events_tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(read_loop(conn.clone(), recv, events_tx, progress.clone()));

    write_frame(&mut send, &Message::registration(args.id)).await?;
    if let (Some(to), Some(text)) = (args.to, args.send.as_ref()) {
        for i in 0..args.count {
            let payload = if args.count == 1 { text.clone() } else { format!("{}-{}", text, i) };
            write_frame(&mut send, &Message::client_to_client(args.id, to, payload.as_bytes())).await?;
            progress.sent.fetch_add(1, Ordering::SeqCst);
        }
    }
    let mut received = 0u64;
    while received < args.expect {
        match events.recv().await {
            Some(Ok(())) => received += 1,
            Some(Err(e)) => return Err(e),
            None => return Err("internal error: the reader stopped".to_string()),
        }
    }
    send.finish().await.map_err(|e| describe_write(&e))
}

async fn run(args: Args) -> Result<(), String> {
    let bind: SocketAddr = if args.server.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().unwrap();
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| format!("cannot bind UDP {}: {}", bind, e))?;
    endpoint.set_default_client_config(client_config());

    let progress = Arc::new(Progress::default());
    let mut conn = None;
    let outcome = tokio::time::timeout(args.timeout, session(&endpoint, &args, progress.clone(), &mut conn)).await;
    let result = match outcome {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timeout after {:?}: {}, sent {}/{} messages, received {}/{} deliveries",
            args.timeout,
            if conn.is_some() { "connected" } else { "not connected (handshake incomplete)" },
            progress.sent.load(Ordering::SeqCst),
            if args.send.is_some() { args.count } else { 0 },
            progress.received.load(Ordering::SeqCst),
            args.expect
        )),
    };
    let reason: &[u8] = if result.is_ok() { b"" } else { b"client error" };
    if let Some(conn) = conn {
        conn.close(0u32.into(), reason);
    }
    // Let the CONNECTION_CLOSE go out (bounded: the server may already be gone).
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    result
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("quinn-legacy-client: {}\n{}", e, USAGE);
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quinn-legacy-client: {}", e);
            ExitCode::from(1)
        }
    }
}
