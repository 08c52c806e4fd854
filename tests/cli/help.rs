//! `--help` for the commands, in the style of the server's flags; the server itself still starts
//! with no command (every HTTP test depends on that).

use crate::command::run;

#[test]
fn help_lists_the_commands() {
    let help = run(&["--help"], None);
    help.assert_success();
    let text = help.stdout_text();
    for command in ["put", "get", "info", "watch"] {
        assert!(
            text.lines()
                .any(|line| line.trim_start().starts_with(command)),
            "`shmimage --help` lists {command}:\n{text}"
        );
    }
    assert!(
        text.contains("--port"),
        "the server's flags are still there:\n{text}"
    );
}

#[test]
fn each_command_explains_its_arguments_and_environment() {
    for (command, expected) in [
        (
            "put",
            &[
                "FILE",
                "--segment <NAME>",
                "SHMIMAGE_SEGMENT",
                "--max-pixels",
            ][..],
        ),
        ("get", &["OUT", "--segment <NAME>", "SHMIMAGE_SEGMENT"][..]),
        ("info", &["--segment <NAME>", "SHMIMAGE_SEGMENT"][..]),
        (
            "watch",
            &["--segment <NAME>", "--since", "--count", "--timeout"][..],
        ),
    ] {
        let help = run(&[command, "--help"], None);
        help.assert_success();
        let text = help.stdout_text();
        for word in expected {
            assert!(
                text.contains(word),
                "`shmimage {command} --help` mentions {word}:\n{text}"
            );
        }
    }
}

#[test]
fn a_server_flag_after_a_command_is_refused() {
    let refused = run(&["get", "out.png", "--port", "1"], None);
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("--port"), "{}", refused.stderr);
}
