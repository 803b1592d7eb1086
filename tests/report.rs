//! `pql backtest --report`: the HTML page, opened in a real headless browser (Debian's
//! `chromium`; `scripts/install-chromium.sh` installs it): the charts render (the script ran and
//! counted them, every chart is an SVG with marks) and the page logs no console errors. The page
//! must not fetch anything: it has no external URL at all.

use std::path::{Path, PathBuf};
use std::process::Command;

use pql_tests::{example_definition, pql, write};

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
    })
}

/// Renders `page` in headless chromium: (DOM after scripts ran, browser log).
fn render(browser: &Path, page: &Path, profile: &Path) -> (String, String) {
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "chromium failed: {log}");
    (String::from_utf8_lossy(&output.stdout).into_owned(), log)
}

fn console_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("CONSOLE")
                || l.contains("Uncaught")
                || (l.contains(":ERROR:") && l.contains("console"))
        })
        .collect()
}

#[test]
fn the_backtest_report_renders_its_charts_in_a_browser_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let outcomes = dir.path().join("outcomes.csv");
    pql()
        .args([
            "generate",
            "--accounts",
            "150",
            "--days",
            "30",
            "--seed",
            "7",
        ])
        .arg("--events")
        .arg(&events)
        .arg("--outcomes")
        .arg(&outcomes)
        .assert()
        .success();
    let example = std::fs::read_to_string(example_definition()).unwrap();
    assert!(example.contains("warm = 35\nhot = 60"));
    let looser = write(
        dir.path(),
        "looser.toml",
        &example.replace("warm = 35\nhot = 60", "warm = 20\nhot = 40"),
    );
    let report = dir.path().join("report <&>.html");
    let output = pql()
        .arg("backtest")
        .arg("--definition")
        .arg(example_definition())
        .arg("--events")
        .arg(&events)
        .arg("--outcomes")
        .arg(&outcomes)
        .arg("--report")
        .arg(&report)
        .arg("--compare")
        .arg(&looser)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let html = std::fs::read_to_string(&report).unwrap();

    // Self-contained: no external resource of any kind.
    for needle in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
        "<link",
        "src=\"//",
    ] {
        assert!(
            !html.contains(needle),
            "the page refers to something outside: {needle}"
        );
    }
    // Both definitions, side by side, and the thresholds marked.
    assert!(html.contains("warm 35") && html.contains("hot 60"));
    assert!(html.contains("warm 20") && html.contains("hot 40"));
    assert_eq!(html.matches("data-chart=\"precision-recall\"").count(), 2);

    let Some(browser) = chromium() else {
        eprintln!("SKIPPED the browser part: `chromium` is not installed (bash scripts/install-chromium.sh installs it; CI must)");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have chromium: run scripts/install-chromium.sh"
        );
        return;
    };
    let (dom, log) = render(&browser, &report, &dir.path().join("profile"));
    // The script ran: it counted the charts into <body data-charts>.
    assert!(
        dom.contains("data-charts=\"10\""),
        "charts not counted by the script: {}",
        &dom[..dom.len().min(500)]
    );
    for kind in [
        "funnel",
        "stages",
        "time-to-pql",
        "scores",
        "precision-recall",
    ] {
        let charts = dom.matches(&format!("data-chart=\"{kind}\"")).count();
        assert_eq!(charts, 2, "{kind}: {charts} charts");
    }
    assert!(dom.matches("<rect class=\"bar\"").count() > 50);
    assert!(dom.matches("<path class=\"line\"").count() == 4);
    assert!(dom.matches("class=\"threshold\"").count() >= 8);
    let errors = console_errors(&log);
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // The check can fail: a page with a script error is caught.
    let broken = dir.path().join("broken.html");
    std::fs::write(
        &broken,
        html.replace("document.body.setAttribute", "document.body.nope"),
    )
    .unwrap();
    let (dom, log) = render(&browser, &broken, &dir.path().join("profile2"));
    assert!(
        !dom.contains("data-charts=\""),
        "the broken page was counted"
    );
    assert!(
        !console_errors(&log).is_empty(),
        "no console error logged for a broken script: {log}"
    );
}
