"""The shared progress reporter: plain stderr lines when stderr is not a terminal."""

from autogaze_ext.progress import Progress


def test_plain_lines_every_n_updates_and_at_the_end(capsys):
    with Progress(7, "rollouts", "batch", every=3) as progress:
        for _ in range(7):
            progress.update()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["rollouts 3/7 batches (43%)", "rollouts 6/7 batches (86%)",
                     "rollouts 7/7 batches (100%)"]


def test_notes_padding_and_quiet(capsys):
    progress = Progress(20, "gaze", "frame")
    progress.update(16, "1.25 s")
    progress.update(4)
    progress.close()
    assert capsys.readouterr().err.splitlines() == ["gaze    16/20 frames (80%), 1.25 s",
                                                    "gaze    20/20 frames (100%)"]
    silent = Progress(5, "gaze", "frame", quiet=True)
    silent.update(5)
    assert capsys.readouterr().err == ""
