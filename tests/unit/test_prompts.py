import pytest

from packsight.labels.taxonomy import load_taxonomy
from packsight.vlm.prompts import build_messages

TAXONOMY = load_taxonomy("assignment")
INDICES = (0, 17, 35, 53, 71, 89, 107, 124)


def test_one_video_then_the_instruction() -> None:
    messages = build_messages(taxonomy=TAXONOMY, clip_frame_count=125, frame_indices=INDICES)
    assert len(messages) == 1 and messages[0]["role"] == "user"
    video, text = messages[0]["content"]
    assert video == {"type": "video"}
    assert text["type"] == "text"


def test_instruction_names_operations_frames_and_answer_format() -> None:
    messages = build_messages(taxonomy=TAXONOMY, clip_frame_count=125, frame_indices=INDICES)
    text = messages[0]["content"][1]["text"]
    assert "Operations: A = Box Setup; B = Inner Packing; C = Tape; D = Put Items" in text
    assert "J = Unknown." in text and "three digits" in text
    assert "clip frames 0, 17, 35, 53, 71, 89, 107, 124" in text
    assert "125 frames, numbered 0 to 124" in text and "three digits" in text
    for key in ("dominant_operation", "start_frame", "end_frame", "anticipated_next_operation"):
        assert f'"{key}"' in text


def test_is_deterministic_and_depends_on_the_clip() -> None:
    def build(n: int, indices: tuple[int, ...]) -> list[dict]:
        return build_messages(taxonomy=TAXONOMY, clip_frame_count=n, frame_indices=indices)

    assert build(125, INDICES) == build(125, INDICES)
    assert build(60, (0, 20, 40, 59)) != build(125, INDICES)


def test_uses_the_given_taxonomy() -> None:
    openpack = load_taxonomy("openpack")
    text = build_messages(taxonomy=openpack, clip_frame_count=125, frame_indices=INDICES)[0][
        "content"
    ][1]["text"]
    assert "Attach Shipping Label" in text and "Box Setup" not in text


@pytest.mark.parametrize(("n", "indices"), [(125, (0, 125)), (0, (0,)), (10, ())])
def test_rejects_frames_outside_the_clip(n: int, indices: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        build_messages(taxonomy=TAXONOMY, clip_frame_count=n, frame_indices=indices)
