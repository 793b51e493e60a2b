//! `touchwire demo --once`: the whole loop in one process, on its own sample repository.
#![cfg(unix)]

mod util;

#[test]
fn the_demo_script_shows_each_case() {
    let env = util::Env::new();
    let run = env.run(&["demo", "--once"]);
    run.expect_code(0);
    let out = &run.stdout;
    let section = |start: &str, end: &str| -> String {
        let from = out.find(start).unwrap_or_else(|| panic!("no {start:?} in:\n{out}"));
        let to = out[from..].find(end).map(|i| from + i).unwrap_or(out.len());
        out[from..to].to_string()
    };
    let save = section("1. save", "2. ");
    assert!(save.contains("app/views.py: reloaded app") && save.contains("1 trigger(s)"), "{save}");
    let atomic = section("2. atomic save", "3. ");
    assert!(atomic.contains("app/models.py: reloaded app") && atomic.contains("1 trigger(s)"), "{atomic}");
    let ignored = section("3. edit venv/", "4. ");
    assert!(ignored.contains("nothing sent"), "{ignored}");
    let checkout = section("4. git checkout feature", "\n\n");
    assert!(checkout.contains("1 trigger(s)") || checkout.contains("2 trigger(s)"), "{checkout}");
    assert!(!out.contains("not delivered"), "{out}");
}
