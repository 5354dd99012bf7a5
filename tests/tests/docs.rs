//! The docs stay true to the tree and to the binaries: every relative link in README.md and
//! docs/ names a file that exists (and, with `#anchor`, a heading in it), and every flag the
//! two binaries take is documented somewhere in docs/.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use shoal_common::JobKind;
use shoal_tests::repo_path;

/// README.md and every page of docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo_path("README.md")];
    let docs = repo_path("docs");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&docs)
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "docs/ has pages");
    pages.extend(found);
    pages
}

/// The text outside fenced code blocks and inline code, where links are links.
fn prose(markdown: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                out.push(c);
            }
        }
        out.push('\n');
    }
    out
}

/// The targets of inline links, `[text](target)`.
fn links(markdown: &str) -> Vec<String> {
    let text = prose(markdown);
    let mut found = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            found.push(rest[..end].trim().to_owned());
            rest = &rest[end..];
        }
    }
    found
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> HashSet<String> {
    let mut fenced = false;
    let mut found = HashSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            found.insert(slug(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("read page");
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap_or(Path::new(".")).join(path)
            };
            if !file.exists() {
                broken.push(format!("{}: `{target}`: no such file", page.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let linked = std::fs::read_to_string(&file).unwrap_or_default();
                if !anchors(&linked).contains(anchor) {
                    broken.push(format!("{}: `{target}`: no such heading", page.display()));
                }
            }
        }
    }
    assert!(
        checked >= 15,
        "only {checked} relative links found: is the parser blind?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Every long flag of `command` and its subcommands, with the subcommand's name; `help` and
/// `version` are clap's own.
fn flags(command: &clap::Command, under: &str, out: &mut Vec<(String, String)>) {
    for arg in command.get_arguments() {
        if let Some(long) = arg.get_long() {
            if !matches!(long, "help" | "version") {
                out.push((under.to_owned(), format!("--{long}")));
            }
        }
    }
    for sub in command.get_subcommands() {
        let name = if under.is_empty() {
            sub.get_name().to_owned()
        } else {
            format!("{under} {}", sub.get_name())
        };
        flags(sub, &name, out);
    }
}

#[test]
fn every_flag_of_both_binaries_is_documented() {
    let docs: String = pages()
        .iter()
        .skip(1)
        .map(|p| std::fs::read_to_string(p).expect("read page"))
        .collect();
    let contract = std::fs::read_to_string(repo_path("docs/contract.md")).expect("contract");
    let kinds: HashSet<&str> = JobKind::builtin().iter().map(|k| k.as_str()).collect();
    let mut all = Vec::new();
    flags(&shoal_worker::cli::Cli::command(), "", &mut all);
    let worker_flags = all.len();
    flags(&shoal_producer::cli::command(), "", &mut all);
    assert!(
        worker_flags > 20 && all.len() > worker_flags + 20,
        "{all:?}"
    );
    let mut missing = BTreeSet::new();
    for (command, flag) in &all {
        // A kind's flags are its parameters: `--image-id` is `image_id` in the contract.
        let param = flag.trim_start_matches("--").replace('-', "_");
        let a_parameter = kinds.contains(command.split(' ').next().unwrap_or_default())
            && (contract.contains(&format!("`{param}`"))
                || contract.contains(&format!("\"{param}\"")));
        let documented = a_parameter || docs.contains(flag.as_str());
        if !documented {
            missing.insert(format!("{} {flag}", command).trim().to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "flags no page of docs/ mentions:\n{}",
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
}
