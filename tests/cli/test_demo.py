from PIL import Image

from minigemini.cli import main


def test_demo_answers_about_the_bundled_image_and_draws_the_request(tmp_path, capsys):
    picture = tmp_path / "drawn.png"
    assert main(["demo", "--picture", str(picture)]) == 0
    out = capsys.readouterr().out
    assert "64 visual tokens" in out and "each token mining a 6-cell window" in out
    assert "Prompt    <h>" in out and f"Picture   {picture}" in out
    with Image.open(picture) as image:
        assert image.size == (384, 384)


def test_demo_reports_a_bad_image_as_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    assert main(["demo", "--image", str(bad), "--picture", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgm demo: error: ") and "notes.png" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.png").exists()
