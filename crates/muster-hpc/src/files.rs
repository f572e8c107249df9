//! The files a batch cluster shares with muster — job output, PBS job
//! scripts, the scheduler file, the task-id records and cancel tombstones —
//! live on the host that submits the jobs, which with `submit_host` is a
//! login node and not this machine. So they are never touched with local
//! filesystem calls: each operation is one small POSIX command run through
//! the backend's `CommandRunner`. This module builds those argvs (paths are
//! separate arguments, never spliced into a shell string) and parses their
//! output; it does no I/O itself.

use std::collections::BTreeMap;

/// Prints a file (`cat`).
pub fn read_argv(path: &str) -> Vec<String> {
    vec!["cat".into(), "--".into(), path.into()]
}

/// True when a failed read only means the file is not there (yet).
pub fn is_missing(stderr: &str) -> bool {
    stderr.contains("No such file or directory")
}

/// Creates directories and their parents.
pub fn mkdir_argv(dirs: &[&str]) -> Vec<String> {
    ["mkdir", "-p", "--"]
        .into_iter()
        .map(String::from)
        .chain(dirs.iter().map(|d| d.to_string()))
        .collect()
}

/// Writes standard input to `path`, creating `dir` first.
pub fn write_argv(dir: &str, path: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        r#"mkdir -p -- "$1" && cat > "$2""#.into(),
        "muster-write".into(),
        dir.into(),
        path.into(),
    ]
}

/// Writes standard input to `path` owner-only: `dir` (the credentials'
/// directory, inside the existing-or-created `parent`) is made mode 0700 and
/// the file is created 0600 (umask 077) under a temporary name and renamed
/// over any old one (a job starting meanwhile reads a whole file). Used for
/// the cluster's TLS files: their contents only ever travel on stdin.
pub fn write_private_argv(parent: &str, dir: &str, path: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        r#"mkdir -p -- "$1" && mkdir -p -m 700 -- "$2" && chmod 700 -- "$2" && umask 077 && t="$3.$$.tmp" && rm -f -- "$t" && cat > "$t" && mv -f -- "$t" "$3""#.into(),
        "muster-write-private".into(),
        parent.into(),
        dir.into(),
        path.into(),
    ]
}

/// Removes a directory and everything in it; a missing one is not an error.
pub fn remove_tree_argv(dir: &str) -> Vec<String> {
    vec!["rm".into(), "-rf".into(), "--".into(), dir.into()]
}

/// Removes a file; a missing one is not an error.
pub fn remove_argv(path: &str) -> Vec<String> {
    vec!["rm".into(), "-f".into(), "--".into(), path.into()]
}

/// Creates empty files `names` in `dir` (made first if needed).
pub fn touch_argv(dir: &str, names: &[String]) -> Vec<String> {
    [
        "sh",
        "-c",
        r#"mkdir -p -- "$1" && cd "$1" && shift && touch -- "$@""#,
        "muster-touch",
        dir,
    ]
    .into_iter()
    .map(String::from)
    .chain(names.iter().cloned())
    .collect()
}

/// Prints every line of every file in `dir` as `dir/name:line`; prints
/// nothing (exit 2) when `dir` does not exist.
pub fn read_dir_argv(dir: &str) -> Vec<String> {
    ["grep", "-r", "-s", "-H", "-e", "", "--", dir]
        .into_iter()
        .map(String::from)
        .collect()
}

/// The first non-empty line of each file in a [`read_dir_argv`] listing, by
/// file name (files directly in `dir` only).
pub fn parse_dir_listing(dir: &str, text: &str) -> BTreeMap<String, String> {
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((name, value)) = line
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once(':'))
        else {
            continue;
        };
        let value = value.trim();
        if name.contains('/') || value.is_empty() {
            continue;
        }
        out.entry(name.to_string())
            .or_insert_with(|| value.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::runner::{CommandRunner, CommandSpec, LocalRunner};

    async fn run(argv: Vec<String>, stdin: Option<&str>) -> muster_core::CommandOutput {
        let mut cmd = CommandSpec::new(argv);
        cmd.stdin = stdin.map(|s| s.as_bytes().to_vec());
        LocalRunner.run(&cmd).await.unwrap()
    }

    #[test]
    fn listings_parse_by_file_name() {
        let text = "/l/ids/16[0]:19\n/l/ids/16[2]:\n/l/ids/16[2]:16\n/l/ids/sub/x:1\nnoise\n";
        let got = parse_dir_listing("/l/ids/", text);
        let want: BTreeMap<String, String> = [("16[0]", "19"), ("16[2]", "16")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    /// The commands against a real shell and filesystem, with names that
    /// would break out of a shell string if they were spliced into one.
    #[tokio::test]
    async fn operations_work_on_a_real_filesystem_with_hostile_names() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = format!("{}/a dir/$(touch pwned)", tmp.path().display());
        let path = format!("{dir}/script `id`.sh");
        let out = run(write_argv(&dir, &path), Some("#!/bin/sh\necho hi\n")).await;
        assert_eq!(out.code, 0, "{out:?}");
        let out = run(read_argv(&path), None).await;
        assert_eq!((out.code, out.stdout.as_str()), (0, "#!/bin/sh\necho hi\n"));

        let tomb = format!("{dir}/cancelled");
        let names = vec!["16[1]".to_string(), "-rf".to_string()];
        assert_eq!(run(touch_argv(&tomb, &names), None).await.code, 0);
        assert!(std::path::Path::new(&format!("{tomb}/16[1]")).exists());
        assert!(std::path::Path::new(&format!("{tomb}/-rf")).exists());

        let ids = format!("{dir}/ids");
        assert_eq!(run(mkdir_argv(&[&ids]), None).await.code, 0);
        std::fs::write(format!("{ids}/16[0]"), "19\n").unwrap();
        let out = run(read_dir_argv(&ids), None).await;
        assert_eq!(
            parse_dir_listing(&ids, &out.stdout).get("16[0]").unwrap(),
            "19"
        );

        assert_eq!(run(remove_argv(&path), None).await.code, 0);
        assert_eq!(
            run(remove_argv(&path), None).await.code,
            0,
            "missing is fine"
        );
        let out = run(read_argv(&path), None).await;
        assert!(out.code != 0 && is_missing(&out.stderr), "{out:?}");
        let out = run(read_dir_argv(&format!("{dir}/nowhere")), None).await;
        assert!(out.stdout.is_empty());
        assert!(!tmp.path().join("pwned").exists());
        assert!(!std::env::current_dir().unwrap().join("pwned").exists());
    }
}
