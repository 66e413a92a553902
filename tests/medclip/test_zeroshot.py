"""Zero-shot prompt sets, class embeddings and the classifier, with an injected text encoder."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from medclip import prompts
from medclip.config import MedclipConfig, from_dict
from medclip.zeroshot import (
    RESEARCH_USE_NOTICE,
    PromptSet,
    ZeroShotClassifier,
    ZeroShotResult,
    build_prompt_sets,
    class_embeddings,
    prompt_sets_from_dict,
    prompt_sets_to_dict,
)
from medclip.zeroshot_config import ZeroShotConfig

DIM = 96


def _word_vec(word: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(zlib.crc32(word.encode()))
    return torch.randn(DIM, generator=gen)


STOP = {"the", "is", "there", "of", "with", "and", "a", "findings", "consistent", "evidence"}


def bag_of_words(texts: list[str]) -> torch.Tensor:
    """A fake text encoder with negation: raw (unnormalised) sum of hashed word vectors.

    Words of a sentence containing "no" count negatively, a crude stand-in for what a trained
    text tower learns about negation.
    """
    out = []
    for t in texts:
        vec = torch.zeros(DIM)
        for sentence in t.lower().replace(",", " ").split("."):
            words = [w for w in sentence.split() if w not in STOP]
            sign = -1.0 if "no" in words else 1.0
            for w in words:
                if w != "no":
                    vec += sign * _word_vec(w)
        out.append(vec)
    return torch.stack(out)


def test_prompt_sets_are_templates_times_synonyms_with_negation() -> None:
    cfg = ZeroShotConfig(synonyms={"Edema": ("pulmonary edema", "fluid overload")})
    (edema,) = build_prompt_sets(["Edema"], cfg)
    assert len(edema.positive) == len(cfg.templates_pos) * 2
    assert len(edema.negative) == len(cfg.templates_neg) * 2
    assert "no fluid overload." in edema.negative
    assert "there is pulmonary edema." in edema.positive
    # every templated label gets negated prompts from the defaults too
    for ps in build_prompt_sets(prompts.CHEXPERT_LABELS[1:]):
        assert ps.negative and all(p.startswith(("no ", "there is no ")) for p in ps.negative)


def test_no_finding_is_not_templated_and_negatives_describe_abnormal_studies() -> None:
    sets = {s.label: s for s in build_prompt_sets(prompts.CHEXPERT_LABELS)}
    nf = sets["No Finding"]
    assert nf.is_normal
    joined = " ".join(nf.positive + nf.negative)
    assert "no finding" not in joined.lower()  # CheXzero #19: no "no no finding"
    assert any("normal" in p or "clear" in p for p in nf.positive)
    assert "pleural effusion." in nf.negative and "cardiomegaly." in nf.negative
    norm = build_prompt_sets(["NORM"])[0]
    assert norm.is_normal and any("abnormal" in p for p in norm.negative)


def test_normal_label_without_prompts_is_rejected() -> None:
    with pytest.raises(ValueError, match="normal_prompts"):
        build_prompt_sets(["Normal study"], ZeroShotConfig(normal_labels=("Normal study",)))


def test_config_validation_and_yaml_lists() -> None:
    with pytest.raises(ValueError, match="templates_neg"):
        ZeroShotConfig(templates_neg=())
    with pytest.raises(ValueError, match="mode"):
        ZeroShotConfig(mode="multi")
    with pytest.raises(ValueError, match="once"):
        ZeroShotConfig(templates_pos=("no placeholder",))
    cfg = from_dict(
        MedclipConfig,
        {"zeroshot": {"synonyms": {"Edema": ["fluid overload"]}, "fusion": "embeddings"}},
    )
    assert cfg.zeroshot.synonyms == {"Edema": ("fluid overload",)}
    assert cfg.zeroshot.fusion == "embeddings"


def test_prompt_set_averaging_happens_before_normalisation() -> None:
    raw = {"a": torch.tensor([10.0, 0.0]), "b": torch.tensor([0.0, 1.0])}

    def enc(texts: list[str]) -> torch.Tensor:
        return torch.stack([raw[t] for t in texts])

    ps = [PromptSet("x", ("a", "b"), ("b",))]
    pos_raw, _ = class_embeddings(enc, ps, average_raw=True)
    pos_norm, _ = class_embeddings(enc, ps, average_raw=False)
    torch.testing.assert_close(pos_raw[0], F.normalize(torch.tensor([5.0, 0.5]), dim=0))
    torch.testing.assert_close(pos_norm[0], F.normalize(torch.tensor([0.5, 0.5]), dim=0))


def test_each_prompt_encoded_once_in_batches() -> None:
    calls: list[int] = []

    def enc(texts: list[str]) -> torch.Tensor:
        calls.append(len(texts))
        return bag_of_words(texts)

    sets = build_prompt_sets(prompts.ECG_LABELS)
    class_embeddings(enc, sets, batch_size=16)
    unique = {t for s in sets for t in s.positive + s.negative}
    assert sum(calls) == len(unique)
    assert max(calls) <= 16


def test_pairwise_softmax_matches_chexzero_formula() -> None:
    clf = ZeroShotClassifier.from_encoder(
        bag_of_words, ["Edema", "Pneumothorax"], ZeroShotConfig(temperature=2.0), logit_scale=10.0
    )
    x = torch.randn(3, DIM, generator=torch.Generator().manual_seed(1))
    p = clf.predict_proba(x)
    xn = F.normalize(x, dim=-1)
    s_pos, s_neg = 5.0 * xn @ clf.pos.T, 5.0 * xn @ clf.neg.T
    expected = torch.exp(s_pos) / (torch.exp(s_pos) + torch.exp(s_neg))
    torch.testing.assert_close(p, expected)


def test_single_label_mode_is_a_softmax_over_labels() -> None:
    clf = ZeroShotClassifier.from_encoder(
        bag_of_words, prompts.PTBXL_SUPERCLASS_LABELS, ZeroShotConfig(mode="single")
    )
    p = clf.predict_proba(torch.randn(4, DIM, generator=torch.Generator().manual_seed(2)))
    torch.testing.assert_close(p.sum(1), torch.ones(4))


def _study_embeddings() -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """Fake X-ray embeddings = noisy embeddings of the study's report (a trained CLIP's ideal)."""
    reports = {
        "normal": "no acute cardiopulmonary process. the lungs are clear.",
        "Pleural Effusion": "large right pleural effusion with compressive change.",
        "Cardiomegaly": "marked cardiomegaly, the heart is enlarged.",
        "Pneumothorax": "small left apical pneumothorax.",
        "Edema": "moderate pulmonary edema.",
    }
    gen = torch.Generator().manual_seed(0)
    kinds = list(reports) * 8
    base = bag_of_words([reports[k] for k in kinds])
    emb = F.normalize(base, dim=-1) + 0.05 * torch.randn(base.shape, generator=gen)
    return emb, np.array(kinds), list(reports)


def test_no_finding_and_findings_rank_studies_correctly() -> None:
    labels = ["No Finding", "Pleural Effusion", "Cardiomegaly", "Pneumothorax", "Edema"]
    clf = ZeroShotClassifier.from_encoder(bag_of_words, labels)
    emb, kinds, _ = _study_embeddings()
    p = clf.predict_proba(emb).numpy()
    # "No Finding" (the label CheXzero scored at AUROC 0.07) must rank normal studies first
    assert roc_auc_score(kinds == "normal", p[:, 0]) > 0.9
    for j, lab in enumerate(labels[1:], start=1):
        assert roc_auc_score(kinds == lab, p[:, j]) > 0.8, lab


def test_fusion_uses_each_labels_modalities() -> None:
    labels = ["Cardiomegaly", "AFIB", "Edema"]
    cfg = ZeroShotConfig(label_modalities={"Edema": ("xray", "ecg")})
    clf = ZeroShotClassifier.from_encoder(bag_of_words, labels, cfg, trained_on="synthetic")
    gen = torch.Generator().manual_seed(3)
    x, e = torch.randn(2, DIM, generator=gen), torch.randn(2, DIM, generator=gen)
    px, pe = clf.predict_proba(x).numpy(), clf.predict_proba(e).numpy()

    both = clf.classify(xray=x, ecg=e)
    assert len(both) == 2 and both[0].trained_on == "synthetic"
    np.testing.assert_allclose(both[1].probabilities[0], px[1, 0], rtol=1e-6)  # X-ray only
    np.testing.assert_allclose(both[1].probabilities[1], pe[1, 1], rtol=1e-6)  # ECG only
    np.testing.assert_allclose(both[1].probabilities[2], (px[1, 2] + pe[1, 2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(both[1].per_modality["ecg"], pe[1], rtol=1e-6)

    ecg_only = clf.classify(ecg=e[0])[0]
    assert np.isnan(ecg_only.probabilities[0])  # Cardiomegaly needs an X-ray
    assert set(ecg_only.per_modality) == {"ecg"}
    assert [lab for lab, _ in ecg_only.top(5)] == sorted(
        ["AFIB", "Edema"], key=lambda lab: -ecg_only.probabilities[labels.index(lab)]
    )


def test_embedding_fusion_scores_the_mean_embedding() -> None:
    cfg = ZeroShotConfig(fusion="embeddings", label_modalities={"Edema": ("xray", "ecg")})
    clf = ZeroShotClassifier.from_encoder(bag_of_words, ["Edema", "AFIB"], cfg)
    gen = torch.Generator().manual_seed(4)
    x, e = torch.randn(DIM, generator=gen), torch.randn(DIM, generator=gen)
    res = clf.classify(xray=x, ecg=e)[0]
    mean = F.normalize(F.normalize(x, dim=0) + F.normalize(e, dim=0), dim=0)
    expected = clf.predict_proba(mean).numpy()[0]
    np.testing.assert_allclose(res.probabilities[0], expected[0], rtol=1e-6)
    np.testing.assert_allclose(res.probabilities[1], res.per_modality["ecg"][1], rtol=1e-6)


def test_classify_input_errors() -> None:
    clf = ZeroShotClassifier.from_encoder(bag_of_words, ["Edema"])
    with pytest.raises(ValueError, match="X-ray and/or an ECG"):
        clf.classify()
    with pytest.raises(ValueError, match="batch sizes"):
        clf.classify(xray=torch.randn(2, DIM), ecg=torch.randn(3, DIM))
    with pytest.raises(ValueError, match=r"\(B, 96\)"):
        clf.predict_proba(torch.randn(2, 5))


def test_result_serialises_with_notice_and_thresholds() -> None:
    clf = ZeroShotClassifier.from_encoder(bag_of_words, ["Edema", "Pneumothorax"])
    clf.thresholds = np.array([0.0, 1.1])
    res: ZeroShotResult = clf.classify(xray=torch.randn(DIM))[0]
    assert res.predicted == ("Edema",)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["research_use_notice"] == RESEARCH_USE_NOTICE
    assert "research use only" in d["research_use_notice"].lower()
    assert d["labels"] == ["Edema", "Pneumothorax"] and d["predicted"] == ["Edema"]


def test_prompt_sets_round_trip_json() -> None:
    sets = build_prompt_sets(prompts.CHEXPERT_LABELS)
    back = prompt_sets_from_dict(json.loads(json.dumps(prompt_sets_to_dict(sets))))
    assert back == sets
    clf = ZeroShotClassifier.from_encoder(bag_of_words, prompts.CHEXPERT_LABELS, prompt_sets=back)
    assert clf.labels == prompts.CHEXPERT_LABELS


def test_default_vocabularies() -> None:
    assert len(prompts.CHEXPERT_LABELS) == 14
    assert prompts.vocabulary("ecg") == prompts.ECG_LABELS
    every = prompts.ECG_LABELS + prompts.EXTRA_ECG_LABELS + prompts.PTBXL_SUPERCLASS_LABELS
    for lab in every + prompts.CHEXPERT_LABELS:
        assert lab in prompts.DEFAULT_SYNONYMS or lab in prompts.NORMAL_LABELS
        assert lab in prompts.DEFAULT_LABEL_MODALITIES
    with pytest.raises(KeyError, match="chexpert"):
        prompts.vocabulary("nope")


def test_separate_text_towers_give_per_modality_class_embeddings() -> None:
    def other(texts: list[str]) -> torch.Tensor:
        return bag_of_words([t + " ecg" for t in texts])

    labels = ["AFIB", "Edema"]
    clf = ZeroShotClassifier.from_encoder({"xray": bag_of_words, "ecg": other}, labels)
    ref_x = ZeroShotClassifier.from_encoder(bag_of_words, labels)
    ref_e = ZeroShotClassifier.from_encoder(other, labels)
    e = torch.randn(2, DIM, generator=torch.Generator().manual_seed(5))
    res = clf.classify(xray=e, ecg=e)
    np.testing.assert_allclose(res[0].per_modality["xray"], ref_x.predict_proba(e)[0], rtol=1e-5)
    np.testing.assert_allclose(res[0].per_modality["ecg"], ref_e.predict_proba(e)[0], rtol=1e-5)
    with pytest.raises(ValueError, match="mapping keys"):
        ZeroShotClassifier.from_encoder({"mri": bag_of_words}, labels)


@pytest.mark.parametrize("mode", ["multilabel", "single"])
def test_separate_towers_with_embedding_fusion_average_each_towers_scores(mode: str) -> None:
    def other(texts: list[str]) -> torch.Tensor:
        return bag_of_words([t + " ecg" for t in texts])

    labels = ["AFIB", "Edema"]
    cfg = ZeroShotConfig(
        mode=mode,  # type: ignore[arg-type]
        fusion="embeddings",
        label_modalities={"Edema": ("xray", "ecg"), "AFIB": ("xray", "ecg")},
    )
    clf = ZeroShotClassifier.from_encoder({"xray": bag_of_words, "ecg": other}, labels, cfg)
    gen = torch.Generator().manual_seed(6)
    x, e = torch.randn(3, DIM, generator=gen), torch.randn(3, DIM, generator=gen)
    res = clf.classify(xray=x, ecg=e)
    mean = F.normalize(F.normalize(x, dim=-1) + F.normalize(e, dim=-1), dim=-1)
    expected = (clf.predict_proba(mean, "xray") + clf.predict_proba(mean, "ecg")).numpy() / 2
    for i in range(3):
        np.testing.assert_allclose(res[i].probabilities, expected[i], rtol=1e-5)
        np.testing.assert_allclose(
            res[i].per_modality["ecg"], clf.predict_proba(e, "ecg")[i].numpy(), rtol=1e-5
        )


def test_replaced_class_embeddings_and_scale_are_used_at_once() -> None:
    clf = ZeroShotClassifier.from_encoder(bag_of_words, ["Edema", "Pneumothorax"])
    x = torch.randn(2, DIM, generator=torch.Generator().manual_seed(7))
    before = clf.classify(xray=x)[0].probabilities
    clf.pos, clf.neg = clf.neg, clf.pos  # swap: every probability becomes 1 - p
    np.testing.assert_allclose(clf.classify(xray=x)[0].probabilities, 1 - before, rtol=1e-5)
    clf.pos, clf.neg = clf.neg, clf.pos
    clf.logit_scale = 50.0  # sharper: further from 0.5, same side
    sharper = clf.classify(xray=x)[0].probabilities
    assert np.all(np.abs(sharper - 0.5) >= np.abs(before - 0.5))
    assert np.all(np.sign(sharper - 0.5) == np.sign(before - 0.5))


def test_ecg_labels_are_contrasted_with_normal_ecg_statements() -> None:
    sets = {s.label: s for s in build_prompt_sets(["AFIB", "Cardiomegaly", "NORM"])}
    assert sets["AFIB"].negative == prompts.DEFAULT_NORMAL_PROMPTS["NORM"]
    assert "atrial fibrillation." in sets["AFIB"].positive
    assert all(p.startswith(("no ", "there is no")) for p in sets["Cardiomegaly"].negative)
    assert sets["NORM"].is_normal  # the normal label itself keeps its abnormal prompts
    cfg = ZeroShotConfig(contrast_normal={"AFIB": "", "Cardiomegaly": "No Finding"})
    sets = {s.label: s for s in build_prompt_sets(["AFIB", "Cardiomegaly"], cfg)}
    assert all(p.startswith(("no ", "there is no")) for p in sets["AFIB"].negative)
    assert sets["Cardiomegaly"].negative == prompts.DEFAULT_NORMAL_PROMPTS["No Finding"]
    with pytest.raises(ValueError, match="normal labels"):
        ZeroShotConfig(contrast_normal={"AFIB": "SBRAD"})
