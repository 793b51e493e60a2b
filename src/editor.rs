//! `touchwire init --editor vscode|vim|emacs`: installs an editor integration from `editor/`,
//! embedded in the binary. VS Code's tasks are merged into `.vscode/tasks.json`, keeping the
//! user's own tasks and comments.

use crate::cli::Editor;
use anyhow::{Context, Result, anyhow};
use jsonc_parser::ParseOptions;
use jsonc_parser::cst::{CstInputValue, CstRootNode};
use serde_json::Value;
use std::path::Path;

/// The VS Code tasks shipped in `editor/vscode/tasks.json`.
pub const VSCODE_TASKS: &str = include_str!("../editor/vscode/tasks.json");
/// The Run on Save settings snippet.
pub const VSCODE_SETTINGS: &str = include_str!("../editor/vscode/settings.json");
/// The Vim/Neovim plugin and its help file.
pub const VIM_FILES: [(&str, &str); 2] = [
    ("plugin/touchwire.vim", include_str!("../editor/vim/plugin/touchwire.vim")),
    ("doc/touchwire.txt", include_str!("../editor/vim/doc/touchwire.txt")),
];
/// The Emacs minor mode.
pub const EMACS_FILE: &str = include_str!("../editor/emacs/touchwire.el");

/// Installs the integration for `editor`; `workdir` is the repository's work tree.
pub fn install(editor: Editor, workdir: &Path) -> Result<()> {
    match editor {
        Editor::Vscode => {
            let path = workdir.join(".vscode/tasks.json");
            let merged = match std::fs::read_to_string(&path) {
                Ok(existing) => {
                    merge_tasks(&existing, VSCODE_TASKS).with_context(|| format!("in {}", path.display()))?
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => VSCODE_TASKS.to_string(),
                Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
            };
            write(&path, &merged)?;
            println!("touchwire tasks are in {} (your own tasks are kept)", path.display());
            println!(
                "for a reload on every save, add this to .vscode/settings.json (Run on Save extension):\n{VSCODE_SETTINGS}"
            );
        }
        Editor::Vim => {
            let dirs = directories::BaseDirs::new().context("cannot find your home directory")?;
            let packs = [
                dirs.home_dir().join(".vim/pack/touchwire/start/touchwire"),
                dirs.data_dir().join("nvim/site/pack/touchwire/start/touchwire"),
            ];
            for pack in &packs {
                for (rel, content) in VIM_FILES {
                    write(&pack.join(rel), content)?;
                }
                println!("installed the plugin in {}", pack.display());
            }
            println!("Vim and Neovim load it at start; run :helptags ALL once, then :help touchwire");
        }
        Editor::Emacs => {
            let dirs = directories::BaseDirs::new().context("cannot find your home directory")?;
            let path = dirs.home_dir().join(".emacs.d/lisp/touchwire.el");
            write(&path, EMACS_FILE)?;
            println!("installed {}; add to your init file:", path.display());
            println!("(add-to-list 'load-path \"~/.emacs.d/lisp\")\n(require 'touchwire)\n(global-touchwire-mode 1)");
        }
    }
    Ok(())
}

fn write(path: &Path, content: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, content).with_context(|| format!("cannot write {}", path.display()))
}

/// Parses JSON with comments and trailing commas, as VS Code writes it.
pub fn parse_jsonc(text: &str) -> Result<Value> {
    jsonc_parser::parse_to_serde_value(text, &ParseOptions::default()).map_err(|err| anyhow!("not valid JSON: {err}"))
}

/// Adds the tasks of `ours` whose labels `existing` lacks to `existing`'s `tasks`, keeping
/// everything else in it, comments included.
pub fn merge_tasks(existing: &str, ours: &str) -> Result<String> {
    let ours = parse_jsonc(ours)?;
    let root =
        CstRootNode::parse(existing, &ParseOptions::default()).map_err(|err| anyhow!("not valid JSON: {err}"))?;
    let object = root.object_value_or_set();
    if object.get("version").is_none() {
        object.append("version", "2.0.0".into());
    }
    let tasks = object.array_value_or_set("tasks");
    let labels: Vec<String> = tasks
        .elements()
        .iter()
        .filter_map(|task| task.as_object()?.get("label")?.value()?.as_string_lit()?.decoded_value().ok())
        .collect();
    for task in ours["tasks"].as_array().into_iter().flatten() {
        let label = task["label"].as_str().unwrap_or_default();
        if !labels.iter().any(|l| l == label) {
            tasks.append(input(task));
        }
    }
    Ok(root.to_string())
}

fn input(value: &Value) -> CstInputValue {
    match value {
        Value::Null => CstInputValue::Null,
        Value::Bool(b) => CstInputValue::Bool(*b),
        Value::Number(n) => CstInputValue::Number(n.to_string()),
        Value::String(s) => CstInputValue::String(s.clone()),
        Value::Array(items) => CstInputValue::Array(items.iter().map(input).collect()),
        Value::Object(map) => CstInputValue::Object(map.iter().map(|(k, v)| (k.clone(), input(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_files_are_valid_jsonc() {
        let tasks = parse_jsonc(VSCODE_TASKS).unwrap();
        assert_eq!(tasks["tasks"].as_array().unwrap().len(), 2);
        parse_jsonc(VSCODE_SETTINGS).unwrap();
        parse_jsonc(include_str!("../editor/vscode/keybindings.json")).unwrap();
    }

    #[test]
    fn merging_keeps_the_users_tasks_and_comments_and_is_idempotent() {
        let existing = "{\n  // my comment\n  \"version\": \"2.0.0\",\n  \"tasks\": [\n    { \"label\": \"build\", \"type\": \"shell\", \"command\": \"make\" }, // trailing\n  ],\n}\n";
        let merged = merge_tasks(existing, VSCODE_TASKS).unwrap();
        assert!(merged.contains("// my comment") && merged.contains("// trailing"), "{merged}");
        let value = parse_jsonc(&merged).unwrap();
        let labels: Vec<&str> =
            value["tasks"].as_array().unwrap().iter().map(|t| t["label"].as_str().unwrap()).collect();
        assert_eq!(labels, ["build", "touchwire: reload guest", "touchwire: watch"]);
        assert_eq!(merge_tasks(&merged, VSCODE_TASKS).unwrap(), merged, "merging twice adds nothing");
    }

    #[test]
    fn merging_into_an_empty_object_adds_version_and_tasks() {
        let merged = merge_tasks("{}", VSCODE_TASKS).unwrap();
        let value = parse_jsonc(&merged).unwrap();
        assert_eq!(value["version"], "2.0.0");
        assert_eq!(value["tasks"].as_array().unwrap().len(), 2);
    }
}
