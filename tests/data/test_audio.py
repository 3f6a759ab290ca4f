"""Sound input: WAV reading and its one-line refusals, log-mel and MFCC features in torch, and
data sets of WAV files (a user's own folder, FSDD's recordings split by speaker)."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest
import scipy.fft
import torch
from conftest import tone

from dlab.data import audio, build
from dlab.errors import DataError, InputError
from dlab.recipe import load_recipe

RATE = 8000


def wav_bytes(samples: np.ndarray, rate: int = RATE, channels: int = 1, width: int = 2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as clip:
        clip.setnchannels(channels)
        clip.setsampwidth(width)
        clip.setframerate(rate)
        if width == 1:
            clip.writeframes(((samples * 127) + 128).astype(np.uint8).tobytes())
        else:
            clip.writeframes(np.repeat((samples * 32767).astype("<i2"), channels).tobytes())
    return buffer.getvalue()


def test_mfcc_is_the_orthonormal_dct_of_the_log_mel_spectrum():
    clip = tone(440)
    config = audio.AudioFeatures()
    log_mel = audio.features(clip, config.model_copy(update={"kind": "log_mel"})).double()
    expected = scipy.fft.dct(log_mel.numpy(), type=2, norm="ortho", axis=1)[:, :13]
    assert np.allclose(audio.features(clip, config).numpy(), expected, atol=1e-3)
    assert log_mel.shape == (1 + len(clip) // config.hop, 40)  # centred frames


def test_the_mel_filters_are_triangles_peaking_in_mel_order_over_the_band():
    bank = audio.mel_filterbank(40, 256, RATE)
    assert bank.shape == (40, 129) and (bank >= 0).all() and bank.max() <= 1
    peaks = bank.argmax(1)
    assert (peaks[1:] >= peaks[:-1]).all()  # low to high frequencies
    assert (bank.sum(0)[1:-1] > 0).all()  # every bin inside the band is heard
    # a 440 Hz tone lands in the filter whose triangle covers 440 Hz
    log_mel = audio.features(tone(440), audio.AudioFeatures(kind="log_mel"))
    strongest = int(log_mel.mean(0).argmax())
    assert bank[strongest, round(440 / (RATE / 256))] > 0


def test_a_wav_reads_back_its_samples_at_any_width_and_is_resampled(tmp_path):
    clip = tone(440)
    path = tmp_path / "a.wav"
    audio.write_wav(path, clip, RATE)
    assert np.abs(audio.read_wav(path, RATE) - clip).max() < 1e-4
    eight_bit = audio.read_wav(wav_bytes(clip, width=1), RATE)
    assert np.abs(eight_bit - clip).max() < 0.02
    fast = audio.read_wav(wav_bytes(tone(440, rate=16000), rate=16000), RATE)  # 16 kHz -> 8 kHz
    assert len(fast) == len(clip)
    spectrum = np.abs(np.fft.rfft(fast))
    assert abs(np.argmax(spectrum) * RATE / len(fast) - 440) < 5  # still 440 Hz


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (wav_bytes(tone(440), channels=2), "2 channels; dlab reads mono"),
        (wav_bytes(np.zeros(0, np.float32)), "holds no samples"),
        (wav_bytes(tone(440))[:-400], "truncated: the header declares 4000 samples"),
        (b"GIF89a" + bytes(100), "not a PCM WAV file"),
        (wav_bytes(tone(440, seconds=61)), "61.0 s; clips of at most 60 s"),
    ],
)
def test_bad_wav_files_are_one_line_errors(data, message):
    with pytest.raises(InputError, match=message) as caught:
        audio.read_wav(data, RATE, "clip.wav")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("clip.wav: ")


def test_a_24_bit_wav_is_refused_by_name():
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(3)
        clip.setframerate(RATE)
        clip.writeframes(b"".join(struct.pack("<i", v)[:3] for v in range(100)))
    with pytest.raises(InputError, match="24-bit samples"):
        audio.read_wav(buffer.getvalue(), RATE, "clip.wav")


def _recipe(**data):
    return load_recipe(
        {
            "data": data,
            "model": {"name": "cnn1d", "channels": [16, 16]},
            "train": {"epochs": 6, "optimizer": {"name": "adam", "lr": 0.01}},
        }
    )


def test_an_audio_folder_becomes_standardised_frames_with_its_settings_saved(sound_folder):
    bundle = build(_recipe(name="audio_folder", path=str(sound_folder), frames=90).data, 0)
    assert bundle.meta.classes == ["high", "low"] and bundle.meta.input_shape == (90, 13)
    assert bundle.meta.sizes == {"train": 43, "val": 5, "test": 12}
    assert bundle.meta.details.audio == audio.AudioFeatures()
    again = type(bundle.meta).from_json(bundle.meta.to_json())
    assert again.details.audio == bundle.meta.details.audio  # saved with the run
    # a clip given to predict becomes exactly the tensor it was in training
    from dlab.data.inputs import from_wav

    seen = torch.cat([bundle.train.inputs, bundle.val.inputs, bundle.test.inputs])
    for path in (sound_folder / "low" / "3.wav", sound_folder / "high" / "17.wav"):
        given = from_wav(path, again)
        assert (seen - given).abs().amax(dim=(1, 2)).min() < 1e-5, path


def test_a_sound_classifier_trains_predicts_a_wav_and_serves_an_upload(sound_run, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from dlab.serve import build_app

    run = sound_run
    page = (run.path / "report.html").read_text(encoding="utf-8")
    assert "Clips across the test split: MFCC over time" in page and "section-error" not in page
    assert "Which moments decided" in page and "Integrated gradients" in page
    assert run.dir.meta["evaluation"]["test"]["accuracy"] >= 0.9
    low, high = tmp_path / "low.wav", tmp_path / "high.wav"
    audio.write_wav(low, tone(310, 0.5, seed=99), RATE)
    audio.write_wav(high, tone(1450, 0.6, seed=98), RATE)
    assert [p.label for p in run.predict([low, high])] == ["low", "high"]
    long = tmp_path / "long.wav"
    audio.write_wav(long, tone(300, 2.0), RATE)
    with pytest.raises(InputError, match="long.wav: 201 frames .*the model takes at most 90"):
        run.predict([long])
    with TestClient(build_app(run.path, max_wait_ms=1)) as client:
        answer = client.post("/predict", files={"file": ("h.wav", high.read_bytes(), "audio/wav")})
        stereo = wav_bytes(tone(300), channels=2)
        refused = client.post("/predict", files={"file": ("s.wav", stereo, "audio/wav")})
    assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] == "high"
    assert refused.status_code == 422 and "2 channels" in refused.json()["error"]
    from dlab.cli import main

    (tmp_path / "stereo.wav").write_bytes(stereo)
    assert main(["predict", str(run.path), str(low)]) == 0
    assert main(["predict", str(run.path), str(tmp_path / "stereo.wav")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stereo.wav: 2 channels; dlab reads mono WAV" in err


def test_fsdd_recordings_hold_a_speaker_out_for_testing(tmp_path):
    for speaker in ("ana", "ben", "cy"):
        for digit in range(10):
            for i in range(2):
                clip = tone(200 + 100 * digit, 0.3, seed=digit * 7 + i)
                audio.write_wav(tmp_path / f"{digit}_{speaker}_{i}.wav", clip, RATE)
    bundle = build(_recipe(name="fsdd_wav", path=str(tmp_path), val_size=0.1).data, 0)
    assert bundle.meta.sizes["test"] == 20  # every clip of "cy", the last speaker
    assert bundle.meta.sizes["train"] + bundle.meta.sizes["val"] == 40
    chosen = build(
        _recipe(name="fsdd_wav", path=str(tmp_path), test_speakers=["ana", "ben"]).data, 0
    )
    assert chosen.meta.sizes["test"] == 40
    with pytest.raises(DataError, match="no recordings by 'dan'; the speakers are ana, ben, cy"):
        build(_recipe(name="fsdd_wav", path=str(tmp_path), test_speakers=["dan"]).data, 0)
    later = [tmp_path / f"{digit}_ana_7.wav" for digit in range(10)]  # index 7: training clips
    for digit, path in enumerate(later):
        audio.write_wav(path, tone(200 + 100 * digit, 0.3, seed=50 + digit), RATE)
    official = build(_recipe(name="fsdd_wav", path=str(tmp_path), split="official").data, 0)
    assert official.meta.sizes["test"] == 60  # indices 0 and 1 (< 5) of every speaker
    assert official.meta.sizes["train"] + official.meta.sizes.get("val", 0) == 10
    for path in later:
        path.unlink()
    (tmp_path / "hello.wav").write_bytes(wav_bytes(tone(300)))
    with pytest.raises(DataError, match="hello.wav is not named digit_speaker_index.wav"):
        build(_recipe(name="fsdd_wav", path=str(tmp_path)).data, 0)


def test_log_mel_frames_keep_their_width_through_padding(sound_folder):
    # log-mel frames (40 filters) once crashed the padding, written for 13 MFCC
    bundle = build(
        _recipe(name="audio_folder", path=str(sound_folder), features={"kind": "log_mel"}).data, 0
    )
    x, _ = next(bundle.train.epoch(0))
    assert x.shape[1:] == (bundle.meta.input_shape[0], 40) == (100, 40)


def test_an_audio_folder_needs_two_classes(tmp_path):
    (tmp_path / "only").mkdir()
    audio.write_wav(tmp_path / "only" / "a.wav", tone(300), RATE)
    with pytest.raises(DataError, match="needs at least two sub-folders holding .wav files"):
        build(_recipe(name="audio_folder", path=str(tmp_path)).data, 0)
