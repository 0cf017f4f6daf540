//! The language server's stdio transport: frames on stdin -> messages, and messages -> frames on
//! stdout, each on a thread of its own. It stands in for `lsp-server`'s own stdio transport,
//! which allocates whatever a `Content-Length` claims before reading it: here a frame over
//! [`MAX_FRAME`] bytes is refused from its header, before anything is allocated, and ends the
//! session with an error.

use std::io::{BufRead, Read, Write};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use lsp_server::{Connection, Message};

/// The largest message the server reads (a policy file of several megabytes fits many times).
pub const MAX_FRAME: usize = 64 << 20;

/// The transport's threads, and why reading stopped if it stopped on an error.
pub struct Threads {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    error: Arc<Mutex<Option<String>>>,
}

impl Threads {
    /// Waits for the writer (the reader ends with stdin); the reader's error, if it had one.
    pub fn join(self) -> Result<(), String> {
        let _ = self.writer.join();
        drop(self.reader);
        match self.error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The server's end of a connection over stdin and stdout.
pub fn stdio() -> (Connection, Threads) {
    let (server, client) = Connection::memory();
    let error = Arc::new(Mutex::new(None));
    let failed = error.clone();
    let to_server = client.sender;
    let reader = std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            match read_frame(&mut input) {
                Ok(Some(msg)) => {
                    if to_server.send(msg).is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    *failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                    return;
                }
            }
        }
    });
    let from_server = client.receiver;
    let writer = std::thread::spawn(move || {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for msg in from_server {
            if msg.write(&mut out).is_err() || out.flush().is_err() {
                return;
            }
        }
    });
    (server, Threads { reader, writer, error })
}

/// One framed message; `None` at the end of the input.
pub fn read_frame(input: &mut impl BufRead) -> Result<Option<Message>, String> {
    let mut size = None;
    let mut line = String::new();
    loop {
        line.clear();
        // A header line is short: a longer one is not a header.
        let n = input.by_ref().take(1024).read_line(&mut line).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(None);
        }
        let Some(header) = line.strip_suffix("\r\n") else { return Err(format!("a malformed header: {line:?}")) };
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').ok_or_else(|| format!("a malformed header: {header:?}"))?;
        if name.trim().eq_ignore_ascii_case("content-length") {
            let claimed: u64 =
                value.trim().parse().map_err(|_| format!("a Content-Length that is not a number: {value:?}"))?;
            if claimed > MAX_FRAME as u64 {
                return Err(format!("a message of {claimed} bytes is over the limit of {MAX_FRAME}; the session ends"));
            }
            size = Some(claimed as usize);
        }
    }
    let size = size.ok_or("a message without Content-Length")?;
    let mut body = Vec::with_capacity(size);
    input.by_ref().take(size as u64).read_to_end(&mut body).map_err(|e| e.to_string())?;
    if body.len() < size {
        return Err("the input ended inside a message".into());
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| format!("a malformed message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_content_length_is_refused_before_anything_is_read() {
        let mut input = std::io::Cursor::new(b"Content-Length: 100000000000000\r\n\r\n{}".to_vec());
        let e = read_frame(&mut input).unwrap_err();
        assert!(e.contains("over the limit"), "{e}");
        let body = r#"{"jsonrpc":"2.0","method":"initialized","params":{}}"#;
        let mut input = std::io::Cursor::new(format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes());
        assert!(matches!(read_frame(&mut input), Ok(Some(Message::Notification(_)))));
        assert!(matches!(read_frame(&mut input), Ok(None)));
    }
}
