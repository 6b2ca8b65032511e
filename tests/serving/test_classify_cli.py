"""`stellar classify --csv` against a real server on 127.0.0.1: bad files, invalid rows,
atomic outputs, pipes, versions and help (issue 11).

Each test runs the command line in-process (stellar_serving.cli.main) unless it
needs a real pipe, then as `python -m stellar_serving` in a subprocess.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from stellar_core.contract import CLASSES, MODEL_INPUTS
from stellar_serving import cli
from tests.support import free_port

HEADER = ["spec_obj_ID", *MODEL_INPUTS]
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def target(make_server, registry) -> str:
    registry.set_champion("1")
    return f"127.0.0.1:{make_server().port}"


@pytest.fixture
def folder(tmp_path) -> Path:
    """The test's files alone (make_server keeps its model cache in tmp_path)."""
    path = tmp_path / "files"
    path.mkdir()
    return path


@pytest.fixture
def nowhere() -> str:
    """An address nobody listens on: a command that gets this far would fail with UNAVAILABLE."""
    return f"127.0.0.1:{free_port()}"


def good_rows(inputs: np.ndarray, prefix: str = "obj") -> list[list[str]]:
    # repr of the float32 value as a float64: parses back to the same float32
    return [[f"{prefix}-{k}", *[repr(float(v)) for v in row]] for k, row in enumerate(inputs)]


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return path


def csv_text(rows: list[list[str]], header: list[str] = HEADER) -> bytes:
    return "".join(",".join(r) + "\r\n" for r in [header, *rows]).encode()


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["classify", "--no-progress", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def assert_predictions(predicted: list[dict], ids: list[str], expected: np.ndarray) -> None:
    assert [p["client_id"] for p in predicted] == ids
    assert [p["class"] for p in predicted] == [CLASSES[k] for k in expected.argmax(axis=1)]
    got = np.array([[float(p[f"p_{c}"]) for c in CLASSES] for p in predicted])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)  # the CSV holds 6 significant digits


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- files that cannot be classified: one error line, exit 2, nothing sent ----------------------


def test_missing_file_is_an_error_line_not_a_traceback(capsys, folder, nowhere):
    code, out, err = run(capsys, "--target", nowhere, "--csv", str(folder / "absent.csv"))
    assert code == 2
    assert one_error_line(err) == f"error: {folder / 'absent.csv'}: no such file"
    assert out == ""


def test_missing_columns_are_named_before_connecting(capsys, folder, nowhere):
    path = write_csv(folder / "objects.csv", [["a", "19", "18", "17", "0.1"]], header=["id", "u", "g", "r", "redshift"])
    code, _, err = run(capsys, "--target", nowhere, "--csv", str(path))
    assert code == 2  # not UNAVAILABLE: the header was checked before any connection
    assert one_error_line(err) == (f"error: {path}: missing columns i, z (needed: u, g, r, i, z, redshift; "
                                   "the header has: id, u, g, r, redshift)")


@pytest.mark.parametrize("content, problem", [
    (b"", " is empty: expected a header line with columns u, g, r, i, z, redshift"),
    (b"spec_obj_ID,u,g,r,i,z,redshift\n", " has a header but no rows"),
    (b"spec_obj_ID,u,g,r,i,z,redshift\n\n\n", " has a header but no rows"),
    ("spec_obj_ID,\u00e9,u,g,r,i,z,redshift\n".encode("latin-1"),
     " line 1: not UTF-8 text (byte 0xe9 at character 13); save the file as UTF-8"),
])
def test_empty_header_only_and_non_utf8_files(capsys, folder, nowhere, content, problem):
    path = folder / "objects.csv"
    path.write_bytes(content)
    code, _, err = run(capsys, "--target", nowhere, "--csv", str(path))
    assert code == 2
    assert one_error_line(err) == f"error: {path}{problem}"


def test_outputs_that_cannot_be_written_are_refused_before_connecting(capsys, folder, nowhere, sample_inputs):
    path = write_csv(folder / "objects.csv", good_rows(sample_inputs[:3]))
    before = path.read_bytes()
    cases = [
        (["--output", str(folder / "no-such-folder" / "p.csv")],
         f"error: cannot write {folder / 'no-such-folder' / 'p.csv'}: No such file or directory "
         f"(folder {folder / 'no-such-folder'})"),
        (["--output", str(folder)], f"error: --output {folder} is a folder: give a file name"),
        (["--output", str(path)], f"error: --output {path} is the input file: it would be replaced"),
        (["--on-invalid", "skip", "--output", str(folder / "p.csv"), "--rejects", str(path)],
         f"error: --rejects {path} is the input file: it would be replaced"),
        (["--on-invalid", "skip"],
         "error: --on-invalid skip writes the rejected rows to a file: give --rejects PATH (or --output)"),
        (["--rejects", str(folder / "r.csv")], "error: --rejects is for --on-invalid skip"),
        (["--on-invalid", "skip", "--output", str(folder / "p.csv"), "--rejects", str(folder / "p.csv")],
         f"error: --output and --rejects are the same file: {folder / 'p.csv'}"),
        (["--u", "19"], "error: give either --csv or the input flags (--u ... --redshift), not both"),
    ]
    for flags, message in cases:
        code, _, err = run(capsys, "--target", nowhere, "--csv", str(path), *flags)
        assert (code, one_error_line(err)) == (2, message)
    assert path.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["objects.csv"]


def test_unreachable_server_is_one_error_line(capsys, folder, nowhere, sample_inputs):
    path = write_csv(folder / "objects.csv", good_rows(sample_inputs[:3]))
    code, _, err = run(capsys, "--target", nowhere, "--csv", str(path), "--output", str(folder / "p.csv"))
    assert code == 2
    assert one_error_line(err).startswith("error: UNAVAILABLE: ")
    assert not (folder / "p.csv").exists()
    code, out, err = run(capsys, "--target", nowhere, "--csv", str(path))
    assert (code, out) == (2, "")  # not even the header on stdout
    assert one_error_line(err).startswith("error: UNAVAILABLE: ")


# --- invalid rows: fail (the default) or skip ----------------------------------------------------

BAD_ROWS = [  # (u value, field named, reason)
    ("nineteen", "u", "field 'u' = 'nineteen' is not a number"),
    ("", "u", "field 'u' is missing"),
    ("nan", "u", "field 'u' is NaN"),
    ("-inf", "u", "field 'u' is -infinite"),
    ("-9999", "u", "field 'u' = -9999 is outside the physical range [5, 40]"),  # the server would refuse it
]


def with_bad_row(inputs: np.ndarray, at: int, u: str) -> list[list[str]]:
    rows = good_rows(inputs)
    rows.insert(at, ["bad-1", u, *rows[at][2:]])
    return rows


@pytest.mark.parametrize("u, field, reason", BAD_ROWS)
def test_invalid_row_fails_naming_it_and_leaves_the_previous_output(capsys, folder, target, sample_inputs,
                                                                    u, field, reason):
    path = write_csv(folder / "objects.csv", with_bad_row(sample_inputs[:30], 20, u))
    output = folder / "predictions.csv"
    output.write_text("previous run\n")
    code, _, err = run(capsys, "--target", target, "--csv", str(path), "--output", str(output), "--chunk-size", "8")
    assert code == 2
    assert one_error_line(err) == (f"error: {path} line 22 (id 'bad-1'): {reason}; {output} was not written "
                                   "(--on-invalid skip classifies the valid rows and lists the invalid ones)")
    assert output.read_text() == "previous run\n"
    assert sorted(p.name for p in folder.iterdir()) == ["objects.csv", "predictions.csv"]  # no temp file left


def test_skip_classifies_the_valid_rows_and_writes_the_rejects(capsys, folder, target, registry, sample_inputs):
    inputs = sample_inputs[:40]
    rows = good_rows(inputs)
    bad_at = [3, 9, 15, 21, 27]  # row indexes of the good rows replaced by bad ones
    for k, (u, _, _) in zip(bad_at, BAD_ROWS):
        rows[k] = [f"bad-{k}", u, *rows[k][2:]]
    rows[33] = [*rows[33], "extra"]  # more fields than the header
    path = write_csv(folder / "objects.csv", rows)
    output = folder / "predictions.csv"

    code, _, err = run(capsys, "--target", target, "--csv", str(path), "--output", str(output),
                       "--on-invalid", "skip", "--chunk-size", "8")

    assert code == 0
    kept = [k for k in range(len(rows)) if k not in (*bad_at, 33)]
    assert_predictions(read_rows(output), [f"obj-{k}" for k in kept], registry.expected("1", inputs[kept]))
    rejects_path = Path(f"{output}.rejects.csv")
    rejects = read_rows(rejects_path)
    assert [r["reject_line"] for r in rejects] == [str(k + 2) for k in (*bad_at, 33)]
    assert [(r["reject_field"], r["reject_reason"]) for r in rejects] == [
        *[(field, reason) for _, field, reason in BAD_ROWS],
        ("", "8 fields but the header has 7 (an unquoted comma?)")]
    assert [[r[c] for c in HEADER] for r in rejects] == [rows[k][:7] for k in (*bad_at, 33)]  # as read
    warning, summary = err.strip().splitlines()
    assert warning == (f"warning: skipped 6 invalid rows of 40 (first: line 5 (id 'bad-3'): {BAD_ROWS[0][2]}); "
                       f"written with the reasons to {rejects_path}")
    assert json.loads(summary) == {"objects": 34, "classes": json.loads(summary)["classes"], "model_versions": ["1"],
                                   "skipped": 6, "rejects": str(rejects_path)}


def test_skip_with_every_row_invalid_writes_only_rejects(capsys, folder, target, sample_inputs):
    rows = [[f"bad-{k}", "nan", *row[2:]] for k, row in enumerate(good_rows(sample_inputs[:3]))]
    path = write_csv(folder / "objects.csv", rows)
    output, rejects = folder / "predictions.csv", folder / "rejects.csv"
    code, _, err = run(capsys, "--target", target, "--csv", str(path), "--output", str(output),
                       "--on-invalid", "skip", "--rejects", str(rejects))
    assert code == 0
    assert read_rows(output) == []
    assert [r["spec_obj_ID"] for r in read_rows(rejects)] == ["bad-0", "bad-1", "bad-2"]
    assert err.startswith(f"warning: skipped 3 invalid rows of 3 (first: line 2 (id 'bad-0'): field 'u' is NaN)")


# --- outputs are replaced atomically -------------------------------------------------------------


def test_failure_mid_stream_leaves_the_previous_output(capsys, folder, target, sample_inputs):
    compressed = gzip.compress(csv_text(good_rows(sample_inputs[:3000])))
    path = folder / "objects.csv.gz"
    path.write_bytes(compressed[: len(compressed) * 2 // 3])  # cut off: the stream breaks after many results
    output = folder / "predictions.csv"
    output.write_text("previous run\n")
    code, _, err = run(capsys, "--target", target, "--csv", str(path), "--output", str(output), "--chunk-size", "100")
    assert code == 2
    message = one_error_line(err)
    assert message.startswith(f"error: {path} line ") and "damaged or truncated gzip data" in message
    assert message.endswith(f"; {output} was not written")
    assert output.read_text() == "previous run\n"
    assert sorted(p.name for p in folder.iterdir()) == ["objects.csv.gz", "predictions.csv"]


def test_server_refusal_leaves_the_previous_output(capsys, folder, make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server(max_batch_size=10)
    path = write_csv(folder / "objects.csv", good_rows(sample_inputs[:50]))
    output = folder / "predictions.csv"
    output.write_text("previous run\n")
    code, _, err = run(capsys, "--target", f"127.0.0.1:{server.port}", "--csv", str(path), "--output", str(output),
                       "--chunk-size", "20")
    assert code == 2
    assert one_error_line(err).startswith("error: INVALID_ARGUMENT: ")
    assert output.read_text() == "previous run\n"
    assert sorted(p.name for p in folder.iterdir()) == ["objects.csv", "predictions.csv"]


def test_non_utf8_row_mid_file_is_an_error_naming_the_line(capsys, folder, target, sample_inputs):
    rows = good_rows(sample_inputs[:20])
    text = csv_text(rows).replace(b"obj-12,", "obj-\u00e912,".encode("latin-1"))
    path = folder / "objects.csv"
    path.write_bytes(text)
    output = folder / "predictions.csv"
    code, _, err = run(capsys, "--target", target, "--csv", str(path), "--output", str(output))
    assert code == 2
    assert one_error_line(err) == (f"error: {path} line 14: not UTF-8 text (byte 0xe9 at character 5); "
                                   f"save the file as UTF-8; {output} was not written")
    assert not output.exists()


# --- gzip told by content, duplicate ids, pipes --------------------------------------------------


@pytest.mark.parametrize("name, compress", [("objects.csv", True), ("objects.csv.gz", False)])
def test_gzip_is_told_by_its_bytes_not_its_name(capsys, folder, target, registry, sample_inputs, name, compress):
    text = csv_text(good_rows(sample_inputs[:120]))
    path = folder / name
    path.write_bytes(gzip.compress(text) if compress else text)
    output = folder / "predictions.csv"
    code, _, err = run(capsys, "--target", target, "--csv", str(path), "--output", str(output), "--chunk-size", "50")
    assert code == 0, err
    assert_predictions(read_rows(output), [f"obj-{k}" for k in range(120)], registry.expected("1", sample_inputs[:120]))


def test_duplicate_ids_are_warned_about(capsys, folder, target, sample_inputs):
    rows = good_rows(sample_inputs[:30])
    for k in (10, 11, 12):
        rows[k][0] = "obj-2"
    rows[20][0] = "obj-5"
    path = write_csv(folder / "objects.csv", rows)
    code, out, err = run(capsys, "--target", target, "--csv", str(path))
    assert code == 0
    assert len(out.strip().splitlines()) == 31  # header + every row: duplicates are classified, not dropped
    assert err.strip().splitlines()[0] == (
        f"warning: 2 ids appear more than once in {path} (4 repeated rows; e.g. 'obj-2', 'obj-5'): "
        "their predictions can be told apart only by row order")


def test_output_piped_into_head_stops_quietly(folder, target, sample_inputs):
    # More output than a pipe holds, so the writer meets the closed pipe.
    path = write_csv(folder / "objects.csv", good_rows(sample_inputs[:4000]))
    client = subprocess.Popen([sys.executable, "-m", "stellar_serving", "classify", "--target", target,
                               "--csv", str(path), "--no-progress"],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-1"], stdin=client.stdout, stdout=subprocess.PIPE)
    client.stdout.close()  # only head holds the pipe's read end now
    first_line, _ = head.communicate(timeout=120)
    err = client.stderr.read().decode()
    assert client.wait(timeout=120) == 141
    assert first_line.decode().strip() == ",".join(cli.PREDICTION_COLUMNS)
    assert err == ""


# --- version and help ----------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--version"], ["classify", "--version"], ["model-info", "--version"]])
def test_version_names_the_package_and_the_api(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"stellar {metadata.version('stellar')} (API stellar.v1)"


def test_help_shows_defaults_and_every_option_has_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["classify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: localhost:50051)", "(default: 30.0)", "(default: fail)", "(default: 500)"):
        assert shown in text
    subcommands = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in subcommands.choices.items():
        undocumented = [a.dest for a in parser._actions if not a.help]
        assert undocumented == [], name


def test_an_overlong_id_is_a_rejected_row_not_a_failed_stream(capsys, folder, target, registry, sample_inputs):
    """The server refuses a whole stream for one client_id over its limit: the client checks it per row."""
    rows = good_rows(sample_inputs[:5])
    rows[2] = ["x" * 300, *rows[2][1:]]
    path = write_csv(folder / "objects.csv", rows)
    output = folder / "predictions.csv"
    code, _, err = run(capsys, "--target", target, "--csv", str(path), "--output", str(output),
                       "--on-invalid", "skip")
    assert code == 0, err
    assert [r["client_id"] for r in read_rows(output)] == ["obj-0", "obj-1", "obj-3", "obj-4"]
    [reject] = read_rows(Path(f"{output}.rejects.csv"))
    assert reject["reject_field"] == "client_id" and "300 characters long" in reject["reject_reason"]
