//! The fix printed for unreadable source paths fits why they could not be read.

mod util;

use util::{assert_code, bash_ok, stderr, Env};
use vouch::error::Error;
use vouch::pipeline::manifest::Unreadable;

fn unreadable(path: String, error: &str) -> Unreadable {
    Unreadable {
        path,
        error: error.into(),
    }
}

#[test]
fn the_hint_for_a_path_too_long_to_open_says_so() {
    let long = format!("/srv/{}", "d/".repeat(2100));
    let denied = unreadable("/srv/secret".into(), "Permission denied (os error 13)");
    let too_long = unreadable(long, "File name too long (os error 36)");
    let hint = Error::SourceRead(vec![too_long.clone()]).hint().unwrap();
    assert!(
        hint.contains("PATH_MAX") && hint.contains("shorten"),
        "{hint}"
    );
    assert!(!hint.contains("read access"), "{hint}");
    let hint = Error::SourceRead(vec![denied.clone()]).hint().unwrap();
    assert!(
        hint.contains("read access") && !hint.contains("PATH_MAX"),
        "{hint}"
    );
    let hint = Error::SourceRead(vec![denied, too_long]).hint().unwrap();
    assert!(
        hint.contains("read access") && hint.contains("PATH_MAX"),
        "{hint}"
    );
}

#[test]
fn a_run_over_a_path_longer_than_path_max_fails_with_the_fitting_hint() {
    let env = Env::new();
    std::fs::write(env.src.join("ok.txt"), b"fine").unwrap();
    // 25 directories of 200 bytes each: a path of over 5,000 bytes, made one `cd` at a time.
    let name = "d".repeat(200);
    bash_ok(&format!(
        "cd '{}' && for i in $(seq 25); do mkdir {name} && cd {name}; done && echo deep > f",
        env.src.display()
    ));
    env.write_config("", "");
    let out = env.vouch(&["run"]);
    assert_code(&out, 31);
    let text = stderr(&out);
    assert!(
        text.contains("PATH_MAX") && text.contains("shorten"),
        "{text}"
    );
    assert!(!text.contains("Give vouch read access"), "{text}");
}
