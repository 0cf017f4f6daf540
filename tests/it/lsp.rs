//! `yardmaster lsp` driven over stdio with JSON-RPC, as an editor drives it: initialize, open a
//! policy with a mistake and get its diagnostic at the right UTF-16 range and its quick fix, edit it
//! away and see the error cleared, hover on a model and a fact, document symbols, formatting,
//! completion after `when` and `then`, definitions of a `let` and an include, and shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next: u64,
}

impl Client {
    fn start(dir: &std::path::Path) -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_yardmaster"))
            .arg("lsp")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Client { child, stdin, stdout, next: 1 }
    }

    fn send(&mut self, v: &Value) {
        let body = v.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn read(&mut self) -> Value {
        let mut len = 0;
        loop {
            let mut line = String::new();
            self.stdout.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(n) = line.strip_prefix("Content-Length: ") {
                len = n.parse().unwrap();
            }
        }
        let mut buf = vec![0; len];
        self.stdout.read_exact(&mut buf).unwrap();
        serde_json::from_slice(&buf).unwrap()
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let m = self.read();
            if m["id"] == id {
                return m["result"].clone();
            }
        }
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Replaces the document's text; returns the diagnostics that follow.
    fn change(&mut self, uri: &str, version: u32, text: &str) -> Vec<Value> {
        let params = json!({"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]});
        self.notify("textDocument/didChange", params);
        self.diagnostics(uri)
    }

    /// The next diagnostics published for `uri` (those of other files are passed over).
    fn diagnostics(&mut self, uri: &str) -> Vec<Value> {
        loop {
            let m = self.read();
            if m["method"] == "textDocument/publishDiagnostics" && m["params"]["uri"] == uri {
                return m["params"]["diagnostics"].as_array().unwrap().clone();
            }
        }
    }
}

#[test]
fn an_editor_gets_diagnostics_hover_symbols_and_formatting() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("examples/quickstart.yaml"), dir.path().join("yardmaster.yaml")).unwrap();
    let file = dir.path().join("main.route");
    let uri = format!("file://{}", file.display());
    let mut c = Client::start(dir.path());
    let caps = c.request("initialize", json!({"processId": null, "rootUri": null, "capabilities": {}}));
    assert_eq!(caps["capabilities"]["documentFormattingProvider"], true);
    c.notify("initialized", json!({}));

    // A typo after non-ASCII text on its line: "é" is one UTF-16 unit, "😀" two.
    let text = "rule \"é😀\" { when prompt contains \"x\" then gpt-4oo }\ndefault { then gpt-4o-mini }\n";
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "route", "version": 1, "text": text}}),
    );
    let d = c.diagnostics(&uri);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["code"], "E0201");
    assert_eq!(d[0]["severity"], 1);
    let col = text[..text.find("gpt-4oo").unwrap()].encode_utf16().count();
    assert_eq!(d[0]["range"]["start"], json!({"line": 0, "character": col}));
    assert_eq!(d[0]["range"]["end"], json!({"line": 0, "character": col + 7}));
    assert!(d[0]["message"].as_str().unwrap().contains("gpt-4o"), "{d:?}");

    // Hover on the typo shows its diagnostic and help.
    let h = c.request("textDocument/hover", json!({"textDocument": {"uri": uri}, "position": d[0]["range"]["start"]}));
    let h = h["contents"]["value"].as_str().unwrap();
    assert!(h.contains("**E0201**") && h.contains("help: did you mean `gpt-4o`?"), "{h}");

    // The typo's quick fix.
    let actions = c.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": uri}, "range": d[0]["range"], "context": {"diagnostics": d}}),
    );
    assert_eq!(actions[0]["edit"]["changes"][&uri][0]["newText"], "gpt-4o", "{actions}");

    let fixed = "rule \"code\" {\n  when prompt contains \"x\"\n  then gpt-4o\n}\n\ndefault { then gpt-4o-mini }\n";
    let d = c.change(&uri, 2, fixed);
    // Lint's warnings (unused catalog models) stay; the error is gone.
    assert!(d.iter().all(|x| x["severity"] != 1), "{d:?}");

    let h =
        c.request("textDocument/hover", json!({"textDocument": {"uri": uri}, "position": {"line": 2, "character": 9}}));
    let h = h["contents"]["value"].as_str().unwrap();
    assert!(h.contains("gpt-4o") && h.contains("provider `mock-openai`") && h.contains("128000 tokens"), "{h}");
    let h =
        c.request("textDocument/hover", json!({"textDocument": {"uri": uri}, "position": {"line": 1, "character": 9}}));
    let h = h["contents"]["value"].as_str().unwrap();
    assert!(
        h.contains("**prompt** (fact)") && h.contains("text") && h.contains("prompt contains \"invoice\""),
        "meaning, type and an example: {h}"
    );

    // Symbolic operators and set words.
    let ops = "rule \"big\" {\n  when prompt.tokens >= 2k\n  then cheapest(tagged(\"cheap\")) -> gpt-4o\n}\n\ndefault { then gpt-4o-mini }\n";
    let _ = c.change(&uri, 3, ops);
    let hover_at = |c: &mut Client, line: u32, character: u32| {
        let h = c.request(
            "textDocument/hover",
            json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}),
        );
        h["contents"]["value"].as_str().unwrap_or_default().to_string()
    };
    let h = hover_at(&mut c, 1, 21);
    assert!(h.contains("**>=** (operator)") && h.contains("ordering"), "{h}");
    let h = hover_at(&mut c, 2, 35);
    assert!(h.contains("**->** (target)") && h.contains("fallback chain"), "{h}");
    let h = hover_at(&mut c, 2, 17);
    assert!(h.contains("**tagged** (target)") && h.contains("with the tag"), "{h}");

    let s = c.request("textDocument/documentSymbol", json!({"textDocument": {"uri": uri}}));
    let names: Vec<&str> = s.as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["big", "default"]);
    assert_eq!(s[0]["selectionRange"]["start"], json!({"line": 0, "character": 5}));

    let messy = "rule   \"code\" {  when prompt contains \"x\"\n then gpt-4o }\ndefault {then gpt-4o-mini}\n";
    let _ = c.change(&uri, 4, messy);
    let edits = c.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    assert_eq!(edits[0]["newText"], yardmaster::policy::fmt::format_source(messy).unwrap());
    assert_eq!(edits[0]["range"]["start"], json!({"line": 0, "character": 0}));

    // Completion after `when` and `then`, go to a `let` and to an `include`d file.
    std::fs::write(
        dir.path().join("extra.route"),
        "rule \"extra\" {\n  when prompt contains \"y\"\n  then gpt-4o\n}\n",
    )
    .unwrap();
    let with_let = "include \"extra.route\"\nlet words = [\"a\", \"b\"]\n\nrule \"w\" {\n  when prompt contains any words\n  then \n}\n\ndefault { then gpt-4o-mini }\n";
    let d = c.change(&uri, 5, with_let);
    assert!(d.iter().all(|x| x["code"] != "E0104"), "the include is read from disk: {d:?}");
    let items = c.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": {"line": 5, "character": 7}}),
    );
    let labels: Vec<&str> = items.as_array().unwrap().iter().map(|i| i["label"].as_str().unwrap()).collect();
    assert!(
        labels.contains(&"claude-haiku") && labels.contains(&"healthy") && labels.contains(&"cheapest("),
        "{labels:?}"
    );
    let items = c.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": {"line": 4, "character": 7}}),
    );
    let labels: Vec<&str> = items.as_array().unwrap().iter().map(|i| i["label"].as_str().unwrap()).collect();
    assert!(labels.contains(&"prompt.tokens") && labels.contains(&"words"), "{labels:?}");
    let def = c.request(
        "textDocument/definition",
        json!({"textDocument": {"uri": uri}, "position": {"line": 4, "character": 27}}),
    );
    assert_eq!(def["range"]["start"], json!({"line": 1, "character": 4}), "{def}");
    let def = c.request(
        "textDocument/definition",
        json!({"textDocument": {"uri": uri}, "position": {"line": 0, "character": 12}}),
    );
    assert!(def["uri"].as_str().unwrap().ends_with("/extra.route"), "{def}");

    // A mistake in the included file is published for that file.
    let extra_uri = format!("file://{}", dir.path().join("extra.route").display());
    std::fs::write(
        dir.path().join("extra.route"),
        "rule \"extra\" {\n  when prompt contains \"y\"\n  then gpt-4oo\n}\n",
    )
    .unwrap();
    let with_include = "include \"extra.route\"\n\ndefault { then gpt-4o-mini }\n";
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri, "version": 6}, "contentChanges": [{"text": with_include}]}),
    );
    let d = c.diagnostics(&extra_uri);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0]["code"].as_str(), d[0]["range"]["start"].clone()),
        (Some("E0201"), json!({"line": 2, "character": 7}))
    );

    // Changes typed in a burst are checked once, as the last of them.
    std::fs::write(
        dir.path().join("extra.route"),
        "rule \"extra\" {\n  when prompt contains \"y\"\n  then gpt-4o\n}\n",
    )
    .unwrap();
    for v in 6..9 {
        let params = json!({"textDocument": {"uri": uri, "version": v}, "contentChanges": [{"text": fixed}]});
        c.notify("textDocument/didChange", params);
    }
    let d = c.change(&uri, 9, text);
    assert_eq!(d.iter().filter(|x| x["code"] == "E0201").count(), 1, "the burst's last text was checked first: {d:?}");

    assert_eq!(c.request("shutdown", Value::Null), Value::Null);
    c.notify("exit", Value::Null);
    assert!(c.child.wait().unwrap().success());
}

/// An included file opened on its own is checked through the policy that includes it (its
/// `let`s are known, no missing `default`); a file no policy includes and with no `default` is
/// checked as a part.
#[test]
fn an_included_file_is_checked_through_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("examples/quickstart.yaml"), dir.path().join("yardmaster.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/main.route"),
        "let words = [\"a\"]\ninclude \"part.route\"\n\ndefault { then gpt-4o-mini }\n",
    )
    .unwrap();
    let part = "rule \"p\" {\n  when prompt contains any words\n  then gpt-4oo\n}\n";
    std::fs::write(dir.path().join("rules/part.route"), part).unwrap();
    let mut c = Client::start(dir.path());
    c.request("initialize", json!({"processId": null, "rootUri": null, "capabilities": {}}));
    c.notify("initialized", json!({}));
    let uri = format!("file://{}", dir.path().join("rules/part.route").display());
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "route", "version": 1, "text": part}}),
    );
    let d = c.diagnostics(&uri);
    let codes: Vec<&str> = d.iter().map(|x| x["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["E0201"], "the typo, and neither `words` unknown nor a missing default: {d:?}");
    assert_eq!(d[0]["range"]["start"], json!({"line": 2, "character": 7}));

    let lone = format!("file://{}", dir.path().join("lone.route").display());
    let text = "rule \"l\" {\n  when prompt contains \"x\"\n  then gpt-4o\n}\n";
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": lone, "languageId": "route", "version": 1, "text": text}}),
    );
    let d = c.diagnostics(&lone);
    assert!(d.iter().all(|x| x["code"] != "E0403"), "checked as a part: {d:?}");
    assert_eq!(c.request("shutdown", Value::Null), Value::Null);
    c.notify("exit", Value::Null);
    assert!(c.child.wait().unwrap().success());
}

#[test]
fn a_frame_that_claims_100_terabytes_ends_the_session_with_an_error_instead_of_an_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Client::start(dir.path());
    c.request("initialize", json!({"processId": null, "rootUri": null, "capabilities": {}}));
    c.send(&json!({"jsonrpc": "2.0", "method": "initialized", "params": {}}));
    c.stdin.write_all(b"Content-Length: 100000000000000\r\n\r\n{").unwrap();
    c.stdin.flush().unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = c.child.try_wait().unwrap() {
            assert!(!status.success(), "it ends with an error");
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "the server is still running");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
