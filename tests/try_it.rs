//! docs/try-it.md, run as written. The walkthrough's `sh` block is read from the
//! document itself, so the two cannot drift apart, and executed command by command
//! the way a shell would: `btps` is the binary under test, `cd "$(mktemp -d)"` a
//! temporary directory, a here-document a file, `&` a background process and
//! `kill %N` a SIGTERM to job N, after which the job must exit cleanly.
//!
//! The walkthrough's fixed ports become ephemeral ones: a background process is
//! told to listen on port 0, the address it prints replaces the walkthrough's
//! wherever that appears later, and `sleep` is where the walkthrough waits for
//! what the test has already waited for (that address). No command runs with a
//! fixed port. Then what the walkthrough says happened is checked.
//!
//! Anything the small interpreter here does not understand (a pipe, a variable, a
//! program other than `btps`) fails the test with the line quoted: the walkthrough
//! stays within what a newcomer can paste and what this test can check.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The document the test runs.
const WALKTHROUGH: &str = include_str!("../docs/try-it.md");

/// How long a background process may take to print its address (a new appliance
/// generates its server key first, in a debug build, on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a job may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// One step of the walkthrough.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// `cd "$(mktemp -d)"`.
    FreshDirectory,
    /// `cat > PATH <<'EOF'` … `EOF`.
    WriteFile { path: String, text: String },
    /// `btps …` run to completion: the words after `btps`.
    Run(Vec<String>),
    /// `btps … &`: started in the background.
    Background(Vec<String>),
    /// `sleep N`.
    Sleep,
    /// `kill %N…`: the job numbers, from 1.
    Kill(Vec<usize>),
}

/// The lines of every ```` ```sh ```` block of a Markdown text, in order.
fn shell_lines(markdown: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut inside = false;
    for line in markdown.lines() {
        match (inside, line.trim()) {
            (false, "```sh") => inside = true,
            (true, "```") => inside = false,
            (true, _) => lines.push(line),
            (false, _) => {}
        }
    }
    assert!(!inside, "an ```sh block is not closed");
    lines
}

/// The steps of shell lines (see the module documentation for what is understood).
fn parse(lines: &[&str]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut at = 0;
    while at < lines.len() {
        let mut command = lines[at].trim().to_owned();
        at += 1;
        if command.is_empty() || command.starts_with('#') {
            continue;
        }
        while let Some(joined) = command.strip_suffix('\\') {
            let next = lines
                .get(at)
                .unwrap_or_else(|| panic!("a continued line ends the block: {command}"));
            command = format!("{joined} {}", next.trim());
            at += 1;
        }
        if command == r#"cd "$(mktemp -d)""# {
            steps.push(Step::FreshDirectory);
            continue;
        }
        if let Some(path) = command
            .strip_prefix("cat > ")
            .and_then(|rest| rest.strip_suffix(" <<'EOF'"))
        {
            let end = lines[at..]
                .iter()
                .position(|line| *line == "EOF")
                .unwrap_or_else(|| panic!("the here-document of `{command}` has no EOF line"));
            let mut text = lines[at..at + end].join("\n");
            text.push('\n');
            at += end + 1;
            steps.push(Step::WriteFile {
                path: path.to_owned(),
                text,
            });
            continue;
        }
        let mut words = words(&command);
        let background = words.last().is_some_and(|word| word == "&");
        if background {
            words.pop();
        }
        let step = match (words.first().map(String::as_str), background) {
            (Some("btps"), false) => Step::Run(words[1..].to_vec()),
            (Some("btps"), true) => Step::Background(words[1..].to_vec()),
            (Some("sleep"), false) if words.len() == 2 => Step::Sleep,
            (Some("kill"), false) => Step::Kill(
                words[1..]
                    .iter()
                    .map(|job| {
                        job.strip_prefix('%')
                            .and_then(|number| number.parse().ok())
                            .unwrap_or_else(|| panic!("`{command}`: expected %N job numbers"))
                    })
                    .collect(),
            ),
            _ => panic!("docs/try-it.md: the test cannot run `{command}`"),
        };
        steps.push(step);
    }
    steps
}

/// The words of one command line: blanks separate them; single quotes keep their
/// text as it is; double quotes too, as long as it holds nothing a shell would
/// expand. Anything else a shell would interpret fails the test.
fn words(command: &str) -> Vec<String> {
    const SPECIAL: &str = "$`|;<>(){}*?!~\\\"";
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut characters = command.chars();
    while let Some(character) = characters.next() {
        match character {
            ' ' | '\t' => words.extend(word.take()),
            '\'' | '"' => {
                let mut closed = false;
                let quoted: String = characters
                    .by_ref()
                    .take_while(|c| {
                        closed = *c == character;
                        !closed
                    })
                    .collect();
                assert!(
                    closed,
                    "docs/try-it.md: a quote is not closed in `{command}`"
                );
                assert!(
                    character == '\'' || !quoted.contains(['$', '`', '\\']),
                    "docs/try-it.md: the test cannot expand {quoted:?} in `{command}`"
                );
                word.get_or_insert_with(String::new).push_str(&quoted);
            }
            other if SPECIAL.contains(other) => {
                panic!("docs/try-it.md: the test cannot run `{other}` in `{command}`")
            }
            other => word.get_or_insert_with(String::new).push(other),
        }
    }
    words.extend(word);
    words
}

/// A process started in the background.
struct Job {
    words: Vec<String>,
    child: Child,
    /// Lines of its standard output, as they come.
    lines: Receiver<String>,
    /// Lines read from `lines` so far.
    printed: Vec<String>,
    /// Its standard error, once it has ended.
    errors: Option<JoinHandle<String>>,
    /// The addresses it printed for its listen options, in the order of `start`.
    bound: Vec<SocketAddr>,
    stopped: bool,
}

impl Job {
    /// Reads its output until every marker has been printed, and returns the
    /// address after each (`marker` then `HOST:PORT`).
    fn addresses_after(&mut self, markers: &[&str]) -> Vec<SocketAddr> {
        let mut found: Vec<Option<SocketAddr>> = vec![None; markers.len()];
        let deadline = Instant::now() + START_TIMEOUT;
        let mut next = 0;
        while found.iter().any(Option::is_none) {
            while next < self.printed.len() {
                for (marker, address) in markers.iter().zip(found.iter_mut()) {
                    if let Some((_, rest)) = self.printed[next].split_once(marker) {
                        let text = rest.split_whitespace().next().unwrap_or_default();
                        *address = Some(text.parse().unwrap_or_else(|error| {
                            panic!("{}: {text:?} after {marker:?}: {error}", self.name())
                        }));
                    }
                }
                next += 1;
            }
            if found.iter().all(Option::is_some) {
                break;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(remaining) {
                Ok(line) => self.printed.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("printed no {markers:?} within {START_TIMEOUT:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("ended before printing {markers:?}"))
                }
            }
        }
        found.into_iter().flatten().collect()
    }

    /// SIGTERM, then a clean exit within [`STOP_TIMEOUT`], having said so.
    fn stop(&mut self) {
        let Some(status) = crate::util::sigterm_and_wait(&mut self.child, STOP_TIMEOUT) else {
            self.fail(&format!("did not stop within {STOP_TIMEOUT:?} of SIGTERM"));
        };
        self.stopped = true;
        // The reader thread ends with the process's output.
        self.printed.extend(self.lines.iter());
        if !status.success() {
            self.fail(&format!("exited with {status} after SIGTERM"));
        }
        let last = self.printed.last().map(String::as_str).unwrap_or_default();
        assert!(
            last.ends_with(" stopped"),
            "{}: the last line after SIGTERM is {last:?}, not that it stopped",
            self.name()
        );
    }

    fn name(&self) -> String {
        format!("btps {}", self.words.join(" "))
    }

    /// Fails the test with everything the job printed.
    fn fail(&mut self, problem: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.printed.extend(self.lines.try_iter());
        let errors = self
            .errors
            .take()
            .map(|thread| thread.join().unwrap_or_default())
            .unwrap_or_default();
        panic!(
            "{}: {problem}\nstdout:\n{}\nstderr:\n{errors}",
            self.name(),
            self.printed.join("\n")
        );
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // A failed test leaves no process behind.
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The state of the walkthrough as it runs: its directory, its jobs, the addresses
/// that replace the walkthrough's fixed ones, and every command's output.
#[derive(Default)]
struct Walk {
    directory: Option<tempfile::TempDir>,
    jobs: Vec<Job>,
    addresses: BTreeMap<String, String>,
    outputs: Vec<(Vec<String>, Output)>,
}

impl Walk {
    fn step(&mut self, step: &Step) {
        match step {
            Step::FreshDirectory => self.directory = Some(tempfile::tempdir().unwrap()),
            Step::WriteFile { path, text } => {
                std::fs::write(self.directory().join(path), text).unwrap();
            }
            Step::Run(words) => self.run(words),
            Step::Background(words) => self.start(words),
            // Each background start has already waited for the process's address,
            // which is what the walkthrough sleeps for.
            Step::Sleep => {}
            Step::Kill(jobs) => {
                for number in jobs {
                    let job = number
                        .checked_sub(1)
                        .and_then(|index| self.jobs.get_mut(index))
                        .unwrap_or_else(|| panic!("kill %{number}: no such job"));
                    job.stop();
                }
            }
        }
    }

    fn directory(&self) -> &Path {
        self.directory
            .as_ref()
            .expect("the walkthrough starts with cd \"$(mktemp -d)\"")
            .path()
    }

    /// `btps` with these words, in the walkthrough's directory, with nothing from
    /// the environment choosing a data directory, configuration or address (a fresh
    /// shell).
    fn btps(&self, words: &[String]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_btps"));
        command.args(words).current_dir(self.directory());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("BTPS_") {
                command.env_remove(name);
            }
        }
        command.env_remove("RUST_LOG");
        command
    }

    /// The words with the walkthrough's addresses replaced by the bound ones.
    fn substitute(&self, words: &[String]) -> Vec<String> {
        words
            .iter()
            .map(|word| {
                self.addresses
                    .iter()
                    .fold(word.clone(), |word, (from, to)| word.replace(from, to))
            })
            .collect()
    }

    /// Fails unless every address among the words is port 0 or one a background
    /// process printed: no command of the walkthrough runs with a fixed port.
    fn assert_ephemeral(&self, words: &[String]) {
        for word in words {
            if let Ok(address) = word.parse::<SocketAddr>() {
                assert!(
                    address.port() == 0 || self.addresses.values().any(|bound| bound == word),
                    "btps {}: the fixed address {word} is not one a background process printed",
                    words.join(" ")
                );
            }
        }
    }

    /// Runs a command to completion; it must succeed.
    fn run(&mut self, words: &[String]) {
        let words = self.substitute(words);
        self.assert_ephemeral(&words);
        let output = self.btps(&words).output().unwrap();
        assert!(
            output.status.success(),
            "btps {}: {}\nstdout:\n{}\nstderr:\n{}",
            words.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        self.outputs.push((words, output));
    }

    /// Starts a background process on ephemeral ports: every address it is told to
    /// listen on becomes port 0, and the address it then prints replaces the
    /// walkthrough's from here on. A `btps serve` must name both its addresses, or
    /// it would take the default ports (tests/hygiene.rs).
    fn start(&mut self, words: &[String]) {
        let mut words = self.substitute(words);
        if words.first().map(String::as_str) == Some("serve") {
            for option in ["--listen", "--http-listen"] {
                assert!(
                    words.iter().any(|word| word == option),
                    "the walkthrough's btps serve must name {option}, so that the test can give it an ephemeral port"
                );
            }
        }
        let mut replaced = Vec::new();
        for (option, marker) in [
            ("--listen", "listening on "),
            ("--http-listen", "http endpoint on http://"),
        ] {
            let Some(at) = words.iter().position(|word| word == option) else {
                continue;
            };
            let value = words
                .get_mut(at + 1)
                .unwrap_or_else(|| panic!("{option} without an address"));
            let address: SocketAddr = value
                .parse()
                .unwrap_or_else(|error| panic!("{option} {value}: {error}"));
            replaced.push((value.clone(), marker));
            *value = SocketAddr::new(address.ip(), 0).to_string();
        }
        self.assert_ephemeral(&words);
        assert!(
            !replaced.is_empty(),
            "btps {}: a background process names the address it listens on",
            words.join(" ")
        );
        let mut child = self
            .btps(&words)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut job = Job {
            words,
            child,
            lines,
            printed: Vec::new(),
            errors: Some(errors),
            bound: Vec::new(),
            stopped: false,
        };
        let markers: Vec<&str> = replaced.iter().map(|(_, marker)| *marker).collect();
        job.bound = job.addresses_after(&markers);
        for ((walkthrough, _), bound) in replaced.into_iter().zip(&job.bound) {
            self.addresses.insert(walkthrough, bound.to_string());
        }
        self.jobs.push(job);
    }

    /// The standard output of every command run whose words begin with `prefix`.
    fn outputs_of(&self, prefix: &[&str]) -> Vec<String> {
        self.outputs
            .iter()
            .filter(|(words, _)| words.iter().zip(prefix).all(|(word, want)| word == want))
            .map(|(_, output)| String::from_utf8_lossy(&output.stdout).into_owned())
            .collect()
    }

    /// The output of the one command whose words begin with `prefix`.
    fn output_of(&self, prefix: &[&str]) -> String {
        let mut outputs = self.outputs_of(prefix);
        assert_eq!(outputs.len(), 1, "one `btps {}`", prefix.join(" "));
        outputs.remove(0)
    }
}

#[test]
fn the_walkthrough_of_try_it_runs_as_written() {
    let steps = parse(&shell_lines(WALKTHROUGH));
    let mut walk = Walk::default();
    for step in &steps {
        walk.step(step);
    }

    // Both background processes were stopped by the walkthrough, cleanly.
    assert_eq!(walk.jobs.len(), 2);
    assert!(walk.jobs.iter().all(|job| job.stopped));
    let (responder, appliance) = (&walk.jobs[0], &walk.jobs[1]);
    assert!(responder.name().starts_with("btps dns serve "));
    assert!(appliance.name().starts_with("btps serve "));
    assert_eq!(appliance.bound.len(), 2, "the BTPS and HTTP addresses");

    // "Both sends print a response line with "ok":true."
    let sends = walk.outputs_of(&["send"]);
    assert_eq!(sends.len(), 2);
    for answer in &sends {
        assert!(answer.contains(r#""ok":true"#), "{answer}");
    }

    // The trust request was pending when the operator looked.
    let pending = walk.output_of(&["trust", "list"]);
    assert!(
        pending
            .lines()
            .any(|line| line.contains("billing$vendor.test") && line.contains("pending")),
        "{pending}"
    );

    // "The last listing shows two entries from billing$vendor.test: the trust
    // request and Invoice INV-001."
    let inbox = walk.output_of(&["inbox", "list"]);
    let entries: Vec<&str> = inbox
        .lines()
        .filter(|line| line.contains("billing$vendor.test"))
        .collect();
    assert_eq!(entries.len(), 2, "{inbox}");
    assert!(entries[0].contains("BTPS_DOC") && entries[0].ends_with("Invoice INV-001"));
    assert!(entries[1].contains("TRUST_REQ"), "{inbox}");

    // The records printed name the address the appliance actually bound, and they
    // are exactly what the responder served.
    let printed = walk.output_of(&["dns", "records"]);
    let records: Vec<&str> = printed
        .lines()
        .filter(|line| line.contains(" IN TXT "))
        .collect();
    let bound = appliance.bound[0];
    for name in [
        "btps1._btps.identity.billing.vendor.test.",
        "btps1._btps.identity.finance.client.test.",
        "btps1._btps.identity.admin.client.test.",
        "_btps.host.client.test.",
    ] {
        assert!(
            records.iter().any(|record| record.starts_with(name)),
            "{name} in {printed}"
        );
    }
    assert!(
        records.contains(
            &format!("_btps.host.client.test. IN TXT \"v=1.0.0; u={bound}; s=btps1\"").as_str()
        ),
        "{printed}"
    );
    let served = &responder.printed;
    let last_set = served
        .iter()
        .rposition(|line| line.starts_with("serving "))
        .unwrap_or_else(|| panic!("the responder printed no records: {served:?}"));
    let served: Vec<&str> = served[last_set..]
        .iter()
        .map(String::as_str)
        .filter(|line| line.contains(" IN TXT "))
        .collect();
    assert_eq!(served, records);
}

#[test]
fn the_interpreter_understands_the_walkthrough_and_refuses_the_rest() {
    let lines = [
        "# a comment",
        r#"cd "$(mktemp -d)""#,
        "btps dns serve --listen 127.0.0.1:8053 &",
        "sleep 1",
        "cat > a.json <<'EOF'",
        r#"{"a": 1}"#,
        "EOF",
        r"btps send --from 'billing$vendor.test' \",
        r#"          --document "a.json""#,
        "kill %1 %2",
    ];
    let words = |text: &str| text.split(' ').map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        parse(&lines),
        [
            Step::FreshDirectory,
            Step::Background(words("dns serve --listen 127.0.0.1:8053")),
            Step::Sleep,
            Step::WriteFile {
                path: String::from("a.json"),
                text: String::from("{\"a\": 1}\n")
            },
            Step::Run(words("send --from billing$vendor.test --document a.json")),
            Step::Kill(vec![1, 2]),
        ]
    );
    for unsupported in [
        "btps inbox list x | head",
        "btps send --key $KEY",
        "btps send --key \"$KEY\"",
        "curl http://127.0.0.1:9480/healthz",
        "btps serve > log &",
        "btps send --from 'billing",
    ] {
        let refused = std::panic::catch_unwind(|| parse(&[unsupported]));
        assert!(refused.is_err(), "{unsupported}");
    }
}
