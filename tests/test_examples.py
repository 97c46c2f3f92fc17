"""The example scripts, run tiny: exit codes, output files, the summary line, determinism, one-line flag errors, and
one short adding-problem run that must learn."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

# The test extra installs torch, matplotlib, tqdm, scikit-learn and aeon: a missing one fails loudly here.
import aeon  # noqa: F401
import matplotlib  # noqa: F401
import sklearn  # noqa: F401
import torch
import tqdm  # noqa: F401

from indrnn_core.examples import _common, adding  # noqa: E402

ADDING_LINE = re.compile(r"^test_mse=(\S+) baseline=0\.167 steps=(\d+) seconds=(\d+\.\d)$")
CLASSIFY_LINE = re.compile(r"^test_acc=(\d\.\d{4}) epochs=(\d+) seconds=(\d+\.\d)$")
TINY_ADDING = ["--seq-len", "12", "--steps", "6", "--hidden", "8", "--batch-size", "4", "--test-size", "16",
               "--eval-every", "3", "--quiet"]


def run_main(module, argv, capsys):
    """Run ``module.main(argv)``; returns (exit status, stdout lines, stderr)."""
    try:
        status = module.main(argv)
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out.strip().splitlines(), captured.err


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def expect_flag_error(module, argv, capsys, *needles):
    status, out, err = run_main(module, argv, capsys)
    assert status == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


# ------------------------------------------------------------------------------------------------------------------
# the adding problem
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seq_len", [2, 3, 11, 64])
def test_adding_batch_has_one_marker_per_half_and_sums_them(seq_len):
    x, y = adding.adding_batch(np.random.default_rng(seq_len), 257, seq_len)
    assert x.shape == (seq_len, 257, 2) and y.shape == (257,)
    assert x.dtype == y.dtype == np.float32
    half = seq_len // 2
    markers = x[:, :, 1]
    assert np.all(markers[:half].sum(0) == 1) and np.all(markers[half:].sum(0) == 1)
    np.testing.assert_allclose((x[:, :, 0] * markers).sum(0), y, rtol=1e-6)
    assert np.all((x[:, :, 0] >= 0) & (x[:, :, 0] < 1))


def test_adding_writes_curve_plot_and_summary_line(tmp_path, capsys):
    status, out, err = run_main(adding, TINY_ADDING + ["--out", str(tmp_path)], capsys)
    assert status == 0, err
    match = ADDING_LINE.match(out[-1])
    assert match, out[-1]
    assert int(match.group(2)) == 6 and float(match.group(1)) >= 0
    for name in ("adding.csv", "adding.png", "adding.json"):
        assert (tmp_path / name).stat().st_size > 0
    rows = read_csv(tmp_path / "adding.csv")
    assert [r["step"] for r in rows] == [str(s) for s in range(7)] and {r["model"] for r in rows} == {"indrnn"}
    assert [r["step"] for r in rows if r["test_mse"]] == ["0", "3", "6"]  # --eval-every 3, the last step always
    summary = json.loads((tmp_path / "adding.json").read_text())
    assert summary["results"]["indrnn"]["test_mse"] == pytest.approx(float(match.group(1)), rel=1e-3)
    assert (tmp_path / "adding.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adding_same_seed_same_numbers(tmp_path, capsys):
    def curve(seed, name):
        status, out, err = run_main(adding, TINY_ADDING + ["--seed", str(seed), "--out", str(tmp_path / name)],
                                    capsys)
        assert status == 0, err
        return [(r["model"], r["step"], r["train_loss"], r["test_mse"]) for r in read_csv(tmp_path / name /
                                                                                           "adding.csv")]

    first, again, other = curve(3, "a"), curve(3, "b"), curve(4, "c")
    assert first == again
    assert first != other


def test_adding_compare_lstm_trains_both_on_the_same_batches(tmp_path, capsys):
    status, out, err = run_main(adding, TINY_ADDING + ["--compare", "lstm", "--out", str(tmp_path)], capsys)
    assert status == 0, err
    assert ADDING_LINE.match(out[-1]) and any(line.startswith("lstm: test_mse=") for line in out)
    rows = read_csv(tmp_path / "adding.csv")
    assert {r["model"] for r in rows} == {"indrnn", "lstm"}
    summary = json.loads((tmp_path / "adding.json").read_text())
    assert set(summary["results"]) == {"indrnn", "lstm"}
    # The IndRNN's numbers do not depend on whether an LSTM runs beside it.
    status, _, err = run_main(adding, TINY_ADDING + ["--out", str(tmp_path / "alone")], capsys)
    assert status == 0, err
    alone = [(r["step"], r["train_loss"]) for r in read_csv(tmp_path / "alone" / "adding.csv")]
    assert [(r["step"], r["train_loss"]) for r in rows if r["model"] == "indrnn"] == alone


def test_adding_learns_well_below_the_baseline(tmp_path, capsys):
    # Short sequences learn fast with larger input weights than the long-sequence default (std 1e-3). With these
    # settings seeds 0-5 all ended at test MSE 0.006-0.019 after 300 steps; the bound leaves a wide margin.
    argv = ["--seq-len", "20", "--steps", "300", "--hidden", "32", "--batch-size", "32", "--lr", "2e-3",
            "--input-std", "0.3", "--test-size", "500", "--eval-every", "100", "--quiet", "--out", str(tmp_path)]
    status, out, err = run_main(adding, argv, capsys)
    assert status == 0, err
    mse = float(ADDING_LINE.match(out[-1]).group(1))
    assert mse < 0.05, out[-1]
    curve = [float(r["test_mse"]) for r in read_csv(tmp_path / "adding.csv") if r["test_mse"]]
    assert curve[0] > adding.BASELINE  # the untrained model is worse than always answering 1


def _curve(path):
    return [(r["model"], r["step"], r["train_loss"], r["test_mse"]) for r in read_csv(path / "adding.csv")]


@pytest.mark.parametrize("compare", [[], ["--compare", "lstm"]], ids=["indrnn", "with-lstm"])
def test_adding_resumed_run_equals_the_uninterrupted_one(compare, tmp_path, capsys):
    # --until stops after a step with a checkpoint; --resume continues: the same batches, weights, optimiser state
    # and learning-rate schedule, so every loss and test MSE equals the run made in one go, bit for bit (CPU).
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run_main(adding, TINY_ADDING + compare + ["--out", str(whole)], capsys)[0] == 0
    status, out, err = run_main(adding, TINY_ADDING + compare + ["--out", str(parts), "--until", "3"], capsys)
    assert status == 0, err
    assert "stopped after step 3 of 6" in "\n".join(out) and ADDING_LINE.match(out[-1]).group(2) == "3"
    assert [r[1] for r in _curve(parts) if r[0] == "indrnn"] == ["0", "1", "2", "3"]
    assert json.loads((parts / "adding.json").read_text())["steps_done"] == 3
    status, out, err = run_main(adding, TINY_ADDING + compare + ["--out", str(parts), "--resume"], capsys)
    assert status == 0, err
    assert _curve(parts) == _curve(whole)
    summary, again = (json.loads((d / "adding.json").read_text()) for d in (whole, parts))
    assert again["results"]["indrnn"]["test_mse"] == summary["results"]["indrnn"]["test_mse"]
    assert again["steps_done"] == summary["steps_done"] == 6


def test_adding_resume_checks_the_checkpoint_and_the_flags(tmp_path, capsys):
    expect_flag_error(adding, TINY_ADDING + ["--out", str(tmp_path), "--resume"], capsys,
                      "--resume", "no checkpoint")
    assert run_main(adding, TINY_ADDING + ["--out", str(tmp_path), "--until", "3"], capsys)[0] == 0
    changed = [a if a != "12" else "14" for a in TINY_ADDING]  # another --seq-len
    expect_flag_error(adding, changed + ["--out", str(tmp_path), "--resume"], capsys,
                      "--resume", "--seq-len 12", "given 14")
    (tmp_path / adding.CHECKPOINT).write_bytes(b"\x80\x05N.")  # a pickle of None
    expect_flag_error(adding, TINY_ADDING + ["--out", str(tmp_path), "--resume"], capsys, "not a version-1")


@pytest.mark.parametrize("argv, needles", [
    pytest.param(["--steps", "-5"], ["--steps", "integer >= 1"], id="negative-steps"),
    pytest.param(["--steps", "0"], ["--steps"], id="zero-steps"),
    pytest.param(["--seq-len", "1"], ["--seq-len", "integer >= 2"], id="seq-len-1"),
    pytest.param(["--seq-len", "ten"], ["--seq-len"], id="seq-len-word"),
    pytest.param(["--batch-size", "0"], ["--batch-size"], id="zero-batch"),
    pytest.param(["--lr", "-0.001"], ["--lr", "positive"], id="negative-lr"),
    pytest.param(["--framework", "caffe"], ["--framework", "torch"], id="unknown-framework"),
    pytest.param(["--compare", "gru"], ["--compare", "lstm"], id="unknown-compare"),
    pytest.param(["--device", "cuda:7"], ["--device"], id="missing-gpu"),
    pytest.param(["--device", "toaster"], ["--device", "cpu"], id="unknown-device"),
    pytest.param(["--bogus"], ["--bogus"], id="unknown-flag"),
    pytest.param(["--steps", "10", "--until", "11"], ["--until", "<= --steps (10)"], id="until-past-steps"),
])
def test_adding_bad_flags_get_one_line_and_exit_2(argv, needles, tmp_path, capsys):
    if argv[:2] == ["--device", "cuda:7"]:
        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    expect_flag_error(adding, argv + ["--out", str(tmp_path)], capsys, *needles)


def test_adding_framework_not_installed_names_the_install_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(adding.FRAMEWORKS, "fakeflow", adding.Framework(
        "fakeflow_not_installed_anywhere", "indrnn_core.examples._adding_fakeflow", "pip install fakeflow"))
    expect_flag_error(adding, ["--framework", "fakeflow", "--out", str(tmp_path)], capsys,
                      "'fakeflow' is not installed", "pip install fakeflow")


def test_console_script_bad_flag_exits_2_without_traceback():
    # A real process: what a user sees from the shell (argparse runs before any framework is imported).
    script = os.path.join(os.path.dirname(sys.executable), "indrnn-adding")
    cmd = [script] if os.path.exists(script) else [sys.executable, "-m", "indrnn_core.examples.adding"]
    proc = subprocess.run(cmd + ["--steps", "-1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "--steps" in proc.stderr


def test_one_line_parser_errors_do_not_print_usage(capsys):
    parser = _common.ArgumentParser(prog="prog")
    parser.add_argument("--n", type=_common.int_at_least(3))
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--n", "2"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "prog: error: argument --n: pass an integer >= 3, got 2\n"


# ------------------------------------------------------------------------------------------------------------------
# real-data examples
# ------------------------------------------------------------------------------------------------------------------
def check_classifier_run(module, argv, capsys, out_dir, files, epochs):
    status, out, err = run_main(module, argv + ["--out", str(out_dir), "--quiet"], capsys)
    assert status == 0, err
    match = CLASSIFY_LINE.match(out[-1])
    assert match, out[-1]
    assert 0.0 <= float(match.group(1)) <= 1.0 and int(match.group(2)) == epochs
    for name in files:
        assert (out_dir / name).stat().st_size > 0, name
    rows = read_csv(out_dir / files[0])
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    return float(match.group(1)), rows


def test_digits_tiny(tmp_path, capsys):
    from indrnn_core.examples import digits

    argv = ["--epochs", "2", "--hidden", "16", "--layers", "2", "--batch-size", "64"]
    files = ["digits.csv", "digits.png"]
    acc, rows = check_classifier_run(digits, argv, capsys, tmp_path / "a", files, 2)
    assert acc > 0.2  # chance is 0.1; even two tiny epochs beat it clearly
    _, again = check_classifier_run(digits, argv, capsys, tmp_path / "b", files, 2)
    drop_time = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop_time(rows) == drop_time(again)  # same seed, same numbers


def test_batch_norm_recalibration_gives_the_training_set_statistics():
    import torch

    from indrnn_core.adapters.torch import BatchNormOverTime
    from indrnn_core.examples import _torch

    bn = BatchNormOverTime(3)
    model = torch.nn.Sequential(bn)
    data = (torch.randn(5, 40, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 2.0, 3.0])
            + torch.tensor([-1.0, 0.0, 4.0]))
    batches = [(data[:, i:i + 8], None) for i in range(0, 40, 8)]
    _torch.recalibrate_batch_norm(model, batches)
    flat = data.reshape(-1, 3)
    # equal-sized batches: the average of the batch means is the overall mean
    torch.testing.assert_close(bn.running_mean, flat.mean(0))
    assert bn.momentum == 0.1 and model.training  # both restored


def test_digits_permuted_tiny(tmp_path, capsys):
    from indrnn_core.examples import digits

    check_classifier_run(digits, ["--permute", "--epochs", "1", "--hidden", "8", "--layers", "1",
                                  "--batch-size", "128"], capsys, tmp_path, ["digits.csv", "digits.png"], 1)


def test_vowels_tiny_uses_packed_variable_lengths(tmp_path, capsys):
    from indrnn_core.examples import vowels

    x_train, y_train, x_test, y_test = vowels.load()
    assert (len(x_train), len(x_test)) == (270, 370) and set(y_train) == set(range(9))
    assert len({len(s) for s in x_train}) > 5 and all(s.shape[1] == 12 for s in x_train)
    acc, _ = check_classifier_run(vowels, ["--epochs", "2", "--hidden", "16", "--bidirectional"], capsys, tmp_path,
                                  ["vowels.csv", "vowels.png"], 2)
    assert acc > 0.3  # chance is 1/9


@pytest.fixture
def fake_mnist(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 40, dtype=np.uint8),
             x_test=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, 12, dtype=np.uint8))
    return path


@pytest.mark.parametrize("variant", ["sequential", "permuted"])
def test_mnist_tiny_from_a_user_file(variant, fake_mnist, tmp_path, capsys):
    from indrnn_core.examples import mnist

    argv = ["--data", str(fake_mnist), "--epochs", "1", "--layers", "2", "--hidden", "4", "--batch-size", "16",
            "--val-fraction", "0.25"] + (["--permute"] if variant == "permuted" else [])
    check_classifier_run(mnist, argv, capsys, tmp_path / "out",
                         [f"mnist-{variant}.csv", f"mnist-{variant}.png"], 1)


def test_mnist_race_trains_both_models_on_the_same_batches(fake_mnist, tmp_path, capsys):
    # --compare lstm with --epochs: one step each in turn over the same shuffled batches, so both end with the same
    # step count; the CSV holds each model's validation curve, the JSON each test accuracy.
    from indrnn_core.examples import mnist

    argv = ["--data", str(fake_mnist), "--epochs", "2", "--layers", "2", "--hidden", "4", "--batch-size", "16",
            "--val-fraction", "0.25", "--compare", "lstm", "--quiet", "--out", str(tmp_path)]
    status, out, err = run_main(mnist, argv, capsys)
    assert status == 0, err
    assert CLASSIFY_LINE.match(out[-1]), out[-1]
    summary = json.loads((tmp_path / "mnist-sequential-race.json").read_text())["results"]
    steps = 2 * 2  # 30 training images in batches of 16, twice
    assert summary["indrnn"]["steps"] == summary["lstm"]["steps"] == steps
    assert summary["lstm"]["parameters"] == 4 * (4 * 1 + 4 * 4 + 2 * 4) + (4 * 10 + 10)  # nn.LSTM(1, 4) + Linear
    for name in ("indrnn", "lstm"):
        assert 0 <= summary[name]["test_acc"] <= 1
        rows = [r for r in read_csv(tmp_path / "mnist-sequential-race.csv") if r["model"] == name]
        assert rows[0]["step"] == "0" and rows[-1]["step"] == str(steps)  # the untrained and the final weights
        assert all(0 <= float(r["val_acc"]) <= 1 for r in rows)
    assert (tmp_path / "mnist-sequential-race.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mnist_race_stops_each_model_at_its_time_budget(fake_mnist, tmp_path, capsys):
    from indrnn_core.examples import mnist

    argv = ["--data", str(fake_mnist), "--layers", "1", "--hidden", "4", "--batch-size", "8",
            "--val-fraction", "0.25", "--minutes", "0.005", "--quiet", "--out", str(tmp_path)]
    status, out, err = run_main(mnist, argv, capsys)
    assert status == 0, err
    result = json.loads((tmp_path / "mnist-sequential-race.json").read_text())["results"]["indrnn"]
    assert result["train_minutes"] >= 0.005 and result["steps"] >= 1
    assert set(json.loads((tmp_path / "mnist-sequential-race.json").read_text())["results"]) == {"indrnn"}


@pytest.mark.parametrize("name, argv, needles", [
    ("digits", ["--epochs", "0"], ["--epochs"]),
    ("digits", ["--dropout", "1.5"], ["--dropout", "[0, 1)"]),
    ("digits", ["--test-fraction", "0"], ["--test-fraction"]),
    ("vowels", ["--hidden", "-3"], ["--hidden"]),
    ("mnist", [], ["--data"]),
    ("mnist", ["--data", "no/such/mnist.npz"], ["--data", "x_train"]),
    ("mnist", ["--data", "{bad_npz}"], ["--data", "x_test"]),
    ("mnist", ["--data", "{not_npz}"], ["--data"]),
])
def test_example_bad_flags_get_one_line_and_exit_2(name, argv, needles, tmp_path, capsys):
    module = __import__(f"indrnn_core.examples.{name}", fromlist=["main"])
    bad_npz, not_npz = tmp_path / "bad.npz", tmp_path / "notes.npz"
    np.savez(bad_npz, x_train=np.zeros((2, 784)), y_train=np.zeros(2))
    not_npz.write_text("not an archive")
    argv = [a.format(bad_npz=bad_npz, not_npz=not_npz) for a in argv]
    expect_flag_error(module, argv + ["--out", str(tmp_path / "out")], capsys, *needles)


# ------------------------------------------------------------------------------------------------------------------
# the image example on a folder of IDX files (MNIST, Fashion-MNIST, KMNIST)
# ------------------------------------------------------------------------------------------------------------------
def write_idx(path, array):
    """``array`` as an IDX file (gzipped when ``path`` ends in .gz): magic 0, 0, type, rank; big-endian sizes."""
    import gzip

    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    array = np.asarray(array)
    array = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    data = bytes([0, 0, codes[array.dtype], array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.tobytes()
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(data)


def idx_folder(folder, gz, rng, train=40, test=12):
    folder.mkdir()
    arrays = {"x_train": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, train, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, test, dtype=np.uint8)}
    from indrnn_core.examples import mnist

    for key, array in arrays.items():
        write_idx(folder / (mnist.IDX_NAMES[key] + (".gz" if gz else "")), array)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_mnist_idx_folder_reads_like_the_npz(gz, tmp_path, capsys):
    from indrnn_core.examples import mnist

    arrays = idx_folder(tmp_path / "idx", gz, np.random.default_rng(1))
    npz = tmp_path / "same.npz"
    np.savez(npz, **arrays)
    parser = mnist.build_parser()
    from_idx, from_npz = mnist.load(parser, str(tmp_path / "idx"), None), mnist.load(parser, str(npz), None)
    for a, b in zip(from_idx, from_npz):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert from_idx[0].shape == (40, 784) and from_idx[0].min() >= -1 and from_idx[0].max() <= 1
    for key, array in arrays.items():  # and the raw reader gives the arrays back exactly
        path = tmp_path / "idx" / (mnist.IDX_NAMES[key] + (".gz" if gz else ""))
        np.testing.assert_array_equal(mnist.read_idx(str(path)), array)
    argv = ["--data", str(tmp_path / "idx"), "--epochs", "1", "--layers", "1", "--hidden", "4",
            "--batch-size", "16", "--val-fraction", "0.25", "--permute"]
    check_classifier_run(mnist, argv, capsys, tmp_path / "out", ["mnist-permuted.csv", "mnist-permuted.png"], 1)


def test_mnist_idx_reader_other_element_types_and_names(tmp_path):
    from indrnn_core.examples import mnist

    rng = np.random.default_rng(2)
    for array in (rng.integers(-5, 5, (3, 4)).astype(">i4"), rng.standard_normal((2, 3, 2)).astype(">f4")):
        write_idx(tmp_path / "a.idx", array)
        got = mnist.read_idx(str(tmp_path / "a.idx"))
        np.testing.assert_array_equal(got, array)
        assert got.dtype.isnative
    # other spellings of the names (a dot before idx, "test" for "t10k"); a plain copy wins over a gzipped one
    folder = tmp_path / "kaggle"
    folder.mkdir()
    for name in ("train-images.idx3-ubyte", "train-labels.idx1-ubyte", "test-images.idx3-ubyte",
                 "test-labels.idx1-ubyte", "test-labels.idx1-ubyte.gz", "train-labels-idx3-ubyte", "notes.txt"):
        (folder / name).write_bytes(b"")
    found = mnist.find_idx_files(str(folder))
    assert {k: os.path.basename(v) for k, v in found.items()} == {
        "x_train": "train-images.idx3-ubyte", "y_train": "train-labels.idx1-ubyte",
        "x_test": "test-images.idx3-ubyte", "y_test": "test-labels.idx1-ubyte"}


def test_mnist_idx_folder_bad_input_gets_one_line(tmp_path, capsys):
    from indrnn_core.examples import mnist

    arrays = idx_folder(tmp_path / "idx", True, np.random.default_rng(3))
    out = ["--out", str(tmp_path / "out")]
    (tmp_path / "empty").mkdir()
    expect_flag_error(mnist, ["--data", str(tmp_path / "empty")] + out, capsys, "--data",
                      "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    images = tmp_path / "idx" / "t10k-images-idx3-ubyte.gz"
    write_idx(images, arrays["x_test"][:, :, :20])  # 28 x 20 images: not 784 pixels
    expect_flag_error(mnist, ["--data", str(tmp_path / "idx")] + out, capsys, "--data", "x_test")
    images.write_bytes(b"not gzip at all")
    expect_flag_error(mnist, ["--data", str(tmp_path / "idx")] + out, capsys, "--data", images.name)
    labels = tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz"
    write_idx(images, arrays["x_test"])
    import gzip

    with gzip.open(labels, "wb") as f:  # a header that promises more labels than the file holds
        f.write(bytes([0, 0, 8, 1]) + np.array([99], ">u4").tobytes() + bytes(12))
    expect_flag_error(mnist, ["--data", str(tmp_path / "idx")] + out, capsys, "--data", "99", labels.name)
    with gzip.open(labels, "wb") as f:
        f.write(b"\x01\x02\x03\x04")
    expect_flag_error(mnist, ["--data", str(tmp_path / "idx")] + out, capsys, "--data", "not an IDX file")
