// Starts `yardmaster lsp` for .route files (the binary from the `yardmaster.path` setting).
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = vscode.workspace.getConfiguration("yardmaster").get("path") || "yardmaster";
  const server = { command, args: ["lsp"] };
  client = new LanguageClient("yardmaster", "Yardmaster", { run: server, debug: server }, {
    documentSelector: [{ scheme: "file", language: "route" }],
    synchronize: { fileEvents: vscode.workspace.createFileSystemWatcher("**/yardmaster.yaml") },
  });
  context.subscriptions.push({ dispose: () => client && client.stop() });
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
