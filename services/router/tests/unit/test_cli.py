"""``lalo-router predict | eval`` on small temporary files, and their error paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from lalo_router.cli import main


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_predict_writes_one_line_per_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [{"text": "hello there"}, {"prompt": "what is 12 * 7?", "id": 7}, {"text": ""}],
    )
    assert main(["predict", str(src)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3
    for record in lines:
        assert {"label", "scores", "p_escalate", "latency_ms", "confidence"} <= set(record)
        assert len(record["scores"]) == 9
    assert lines[1]["id"] == 7
    assert lines[2]["label"] == "other"


def test_predict_to_file(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "write a poem about the sea"}])
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(src), "-o", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1


def test_eval_categories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(
        tmp_path / "cats.jsonl",
        [
            {"text": "hi, how are you?", "label": "chat"},
            {"text": "Write a python function to sort a list.", "label": "code"},
            {"text": "what is 5 plus 7", "label": "math"},
        ],
    )
    assert main(["eval", "categories", str(src), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 3
    assert 0.0 <= report["macro_f1"] <= 1.0
    assert {"p50", "p99"} == set(report["latency_ms"])
    assert len(report["confusion"]) == len(report["confusion_labels"])
    assert main(["eval", "categories", str(src)]) == 0
    text = capsys.readouterr().out
    assert "macro-F1" in text
    assert "confusion" in text
    assert "predicted outside" not in text


@pytest.mark.parametrize(
    ("name", "n"),
    [
        ("everyday-prompts.jsonl", 40),
        ("everyday-prompts-b.jsonl", 104),
        ("everyday-prompts-c.jsonl", 86),
    ],
)
def test_the_everyday_prompts_evaluate(
    name: str, n: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """The everyday test sets (the model card's everyday figures) stay valid eval files:
    every category of the classifier, each with a prompt or more."""
    path = Path(__file__).resolve().parents[2] / "eval" / name
    assert main(["eval", "categories", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == n
    assert all(row["support"] >= 2 for row in report["per_class"].values())
    assert len(report["per_class"]) == 9


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_the_everyday_supplement_is_training_data_and_not_a_test_set() -> None:
    """The supplement has the training file's shape and labels, and no prompt of the
    everyday test sets (never trained on) is a near copy of one of its prompts: writers
    converge on the same classic prompts (the farmer, the wolf and the cabbage; "Who wrote
    Pride and Prejudice?"), so test prompts sharing half their words with a supplement
    prompt were taken out of the test sets."""
    service = Path(__file__).resolve().parents[2]
    from lalo_router.classify.model import DEFAULT_ARTIFACT, load_arrays

    labels = set(load_arrays(DEFAULT_ARTIFACT)[1]["labels"])
    rows = [json.loads(line) for line in (service / "data" / "everyday-supplement.jsonl").open()]
    assert {row["label"] for row in rows} == labels
    assert all(set(row) == {"text", "label", "source"} and row["text"].strip() for row in rows)
    trained = [_words(row["text"]) for row in rows]
    for path in (service / "eval").glob("everyday-prompts*.jsonl"):
        for line in path.open():
            words = _words(json.loads(line)["text"])
            overlap = max(len(words & other) / len(words | other) for other in trained)
            assert overlap < 0.5, (path.name, line)


def test_train_with_a_supplement_label_the_data_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(tmp_path / "categories-train.jsonl", [{"text": "hi", "label": "chat"}])
    (tmp_path / "outcomes-train.jsonl").write_text("")
    supplement = write_jsonl(
        tmp_path / "extra.jsonl",
        [{"text": "hello", "label": "chat"}, {"text": "book it", "label": "booking"}],
    )
    assert main(["train", "--data", str(tmp_path), "--supplement", str(supplement)]) == 2
    err = capsys.readouterr().err
    assert "extra.jsonl:2: label 'booking' is not one of the training data's (chat)" in err


def test_train_with_a_missing_supplement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("categories-train.jsonl", "outcomes-train.jsonl"):
        (tmp_path / name).write_text("")
    missing = tmp_path / "nope.jsonl"
    assert main(["train", "--data", str(tmp_path), "--supplement", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "supplement not found" in err
    assert "--no-supplement" in err


def test_eval_categories_shows_other_both_ways(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An `other` prediction is an error for its true label; averaged as a class of its own
    (scikit-learn's default) it also adds an F1 of 0: both figures are printed."""
    src = write_jsonl(
        tmp_path / "cats.jsonl",
        [
            {"text": "Write a python function to sort a list.", "label": "code"},
            {"text": "Write a python function that reverses a string.", "label": "code"},
            {"text": "🙂🙂🙂🙂", "label": "chat"},
        ],
    )
    assert main(["eval", "categories", str(src), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["predicted_outside_truth"] == {"other": 1}
    assert report["macro_f1"] == pytest.approx(0.5)  # code 1.0, chat 0.0
    assert report["macro_f1_over_predicted_labels_too"] == pytest.approx(1.0 / 3.0)
    assert main(["eval", "categories", str(src)]) == 0
    assert "predicted outside the true labels: other 1; macro-F1 averaging over them too" in (
        capsys.readouterr().out
    )


def test_eval_outcomes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = []
    for i in range(30):
        rows.append(
            {
                "prompt": f"Question {i}: what is {i} + {i * 3}?",
                "dataset": "gsm8k" if i % 2 else "mmlu/anatomy",
                "scores": {"small": float(i % 3 != 0), "large": 1.0},
                "small_model": "small",
                "large_model": "large",
            }
        )
    rows.append({"prompt": "no pair", "dataset": "x", "scores": {"a": 1.0}})
    src = write_jsonl(tmp_path / "outcomes.jsonl", rows)
    assert main(["eval", "outcomes", str(src), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["datasets"]) == {"gsm8k", "mmlu", "all"}
    assert result["datasets"]["all"]["n"] == 30  # every scored row, pooled
    assert result["datasets"]["gsm8k"]["n"] == result["datasets"]["mmlu"]["n"] == 15
    assert result["skipped_rows"] == 1
    for r in result["datasets"].values():
        assert {"apgr", "cpt50_pct", "cpt80_pct"} <= set(r)
    assert main(["eval", "outcomes", str(src)]) == 0
    assert "APGR" in capsys.readouterr().out
    # One dataset: no pooled row repeating it.
    only_gsm8k = write_jsonl(tmp_path / "gsm8k.jsonl", [r for r in rows if r["dataset"] == "gsm8k"])
    assert main(["eval", "outcomes", str(only_gsm8k), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["datasets"]) == {"gsm8k"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\nnot json\n', "not JSON"),
        ('{"other": 1}\n', "no 'text' or 'prompt'"),
        ("[1, 2]\n", "expected a JSON object"),
    ],
)
def test_predict_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(content)
    assert main(["predict", str(src)]) == 2
    assert message in capsys.readouterr().err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_eval_categories_needs_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(tmp_path / "x.jsonl", [{"text": "hi"}])
    assert main(["eval", "categories", str(src)]) == 2
    assert "no 'label'" in capsys.readouterr().err


def test_eval_outcomes_needs_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "hi", "scores": {"a": 1}}])
    assert main(["eval", "outcomes", str(src)]) == 2
    assert "small_model" in capsys.readouterr().err


def test_train_without_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", str(tmp_path)]) == 2
    assert "training data not found" in capsys.readouterr().err


def test_usage_errors_return_2() -> None:
    assert main([]) == 2
    assert main(["eval"]) == 2
    assert main(["predict"]) == 2


def test_llm_strategy_needs_a_target_and_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LALO_ROUTER_LLM_TARGET", raising=False)
    monkeypatch.delenv("LALO_ROUTER_LLM_MODEL", raising=False)
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "hi", "label": "chat"}])
    assert main(["predict", str(src), "--strategy", "llm"]) == 2
    assert "needs --target and --model" in capsys.readouterr().err
    assert main(["eval", "categories", str(src), "--strategy", "llm", "--model", "m"]) == 2
    assert main(["predict", str(src), "--strategy", "gpt"]) == 2


def test_llm_eval_against_nothing_says_every_call_fell_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lalo_testing.stack import free_port

    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "hi", "label": "chat"}])
    target = f"127.0.0.1:{free_port()}"
    args = ["eval", "categories", str(src), "--strategy", "llm", "--target", target]
    assert main([*args, "--model", "m", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["llm_fallbacks"] == {"unavailable": 1}
    assert "every LLM call fell back" in captured.err
