//! A real SMTP server on loopback that captures every message, so tests read the mails the
//! server sends (verification, reset) exactly as a player's mailbox would receive them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub struct CapturedMail {
    pub from: String,
    pub to: Vec<String>,
    /// Headers and body as transmitted (dot-stuffing removed).
    pub data: String,
}

impl CapturedMail {
    /// The value after `label` (e.g. "reset token:") in the body, up to the next whitespace.
    pub fn value_after(&self, label: &str) -> Option<String> {
        // Undo quoted-printable soft line breaks in case the body was encoded.
        let text = self.data.replace("=\r\n", "");
        let start = text.find(label)? + label.len();
        let value: String = text[start..]
            .trim_start()
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        (!value.is_empty()).then_some(value)
    }
}

pub struct SmtpCapture {
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<CapturedMail>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpCapture {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let sink = mails.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let _ = serve_connection(stream, sink).await;
                });
            }
        });
        Self { addr, mails, task }
    }

    /// `mail.smtp_url` for the server under test.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn mails(&self) -> Vec<CapturedMail> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) for the `nth` (0-based) mail to `to` whose data contains `needle`.
    pub async fn wait_for(&self, to: &str, needle: &str, nth: usize) -> CapturedMail {
        let to = to.to_lowercase();
        for _ in 0..200 {
            let found = self
                .mails()
                .into_iter()
                .filter(|m| m.to.iter().any(|t| t.to_lowercase() == to) && m.data.contains(needle))
                .nth(nth);
            if let Some(mail) = found {
                return mail;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no mail to {to} containing {needle:?}; got {:#?}",
            self.mails()
        );
    }
}

impl Drop for SmtpCapture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn address(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg.rfind('>').unwrap_or(arg.len());
    arg[start..end].to_owned()
}

async fn serve_connection(
    stream: TcpStream,
    sink: Arc<Mutex<Vec<CapturedMail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write
        .write_all(b"220 localhost test SMTP ready\r\n")
        .await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                write
                    .write_all(b"250-localhost\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n")
                    .await?
            }
            "HELO" | "NOOP" => write.write_all(b"250 OK\r\n").await?,
            "RSET" => {
                from.clear();
                to.clear();
                write.write_all(b"250 OK\r\n").await?
            }
            "MAIL" => {
                from = address(&command);
                write.write_all(b"250 OK\r\n").await?
            }
            "RCPT" => {
                to.push(address(&command));
                write.write_all(b"250 OK\r\n").await?
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                sink.lock().unwrap().push(CapturedMail {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data,
                });
                write.write_all(b"250 OK queued\r\n").await?
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"502 command not implemented\r\n").await?,
        }
    }
}
