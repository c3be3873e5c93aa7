//! `hsm-csr batch`: answers in input order, failures isolated.

use crate::common::{Token, verified_text};

#[test]
fn batch_answers_every_line_in_order_and_isolates_failures() {
    let token = Token::new();
    let input = token.dir().join("requests.jsonl");
    let lines = [
        r#"{"CommonName":"b1.example"}"#,
        r#"{"CommonName":"b2.example","Country":"CHN"}"#,
        "",
        r#"{"CommonName":"b3.example","SANs":"b3.example,10.0.0.3"}"#,
        "not json",
        r#"{"CommonName":"b5.example","Organization":"Example Ltd"}"#,
        r#"{"CommonName":"b6.example"}"#,
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let run = token.run(
        &["batch"],
        &[
            "--input",
            input.to_str().unwrap(),
            "--workers",
            "2",
            "--label-prefix",
            &token.prefix,
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("batch: 4 CSRs made, 2 failed, 6 lines"),
        "{}",
        run.stderr
    );
    let answers: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 6);
    let names: Vec<&str> = answers
        .iter()
        .map(|a| a["CommonName"].as_str().or(a["Code"].as_str()).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "b1.example",
            "InvalidValue.Malformed",
            "b3.example",
            "InvalidValue.Malformed",
            "b5.example",
            "b6.example"
        ]
    );
    assert_eq!(answers[1]["Line"], 2);
    assert_eq!(answers[3]["Line"], 5);
    for a in answers.iter().filter(|a| a.get("Csr").is_some()) {
        verified_text(a["Csr"].as_str().unwrap());
    }
    assert_eq!(
        token.keys().len(),
        2 * 4,
        "one key pair per answered line, none for failed ones"
    );
}
