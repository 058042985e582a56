"""SynthFace identities: a fixed set of face parameters per person.

An identity is everything about a face that does not change between photographs: head
shape, skin tone and texture, the geometry and colour of eyes, brows, nose and mouth,
hair, facial hair and marks. Each image of the identity (see :mod:`.render`) adds its
own nuisance (pose, expression, light, camera) on top. The parameter ranges keep the
five landmarks of a frontal face near the ArcFace 112x112 template (Deng et al.,
"ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019), so
that rendered faces look like aligned crops.

Two identities must not be near-duplicates: :func:`sample_identities` draws candidates
one at a time and rejects any whose normalised parameter distance
(:func:`identity_distance`) to an accepted identity is below a threshold.
"""
from dataclasses import dataclass, fields
from typing import Dict, List, Sequence, Tuple

import numpy as np

from oaml_mm.errors import ConfigError

__all__ = [
    'FaceIdentity', 'CONTINUOUS_RANGES', 'CATEGORICAL_SIZES', 'sample_identity',
    'identity_vector', 'identity_distance', 'sample_identities', 'stream_rng'
]

#: Continuous identity parameters and their uniform sampling ranges. Units are pixels of
#: the 112x112 aligned frame unless the name says otherwise.
CONTINUOUS_RANGES: Dict[str, Tuple[float, float]] = {
    # head outline
    'head_half_width': (36.0, 45.0),
    'head_top': (4.0, 14.0),  # y of the top of the skull
    'cheek_y': (54.0, 66.0),  # y of the widest point
    'chin_y': (106.0, 118.0),
    'jaw_power': (1.5, 3.2),  # higher: squarer jaw
    'jaw_taper': (0.0, 0.35),
    # skin
    'skin_tone': (0.0, 1.0),  # light -> dark along a skin palette
    'skin_hue': (-1.0, 1.0),  # pinkish <-> yellowish
    'skin_texture': (0.01, 0.045),  # amplitude of the skin noise
    'blush': (0.0, 0.6),
    # eyes
    'eye_half_dist': (15.5, 19.5),
    'eye_y': (49.0, 54.0),
    'eye_width': (8.0, 12.0),
    'eye_height': (3.2, 5.8),
    'eye_slant': (-0.15, 0.2),  # radians, outer corner up
    'iris_radius': (2.4, 3.4),
    'iris_hue': (0.0, 1.0),  # index into the iris palette (continuous blend)
    # brows
    'brow_gap': (5.0, 10.0),
    'brow_thickness': (1.4, 4.2),
    'brow_length': (13.0, 20.0),
    'brow_arch': (0.5, 4.0),
    'brow_tilt': (-0.2, 0.2),
    # nose
    'nose_y': (69.0, 75.0),
    'nose_half_width': (4.0, 7.5),
    'nostril_size': (1.0, 2.4),
    'nose_bridge': (0.2, 1.0),  # strength of the bridge shading
    # mouth
    'mouth_y': (89.0, 95.0),
    'mouth_half_width': (11.5, 17.5),
    'upper_lip': (1.5, 4.0),
    'lower_lip': (2.0, 5.5),
    'lip_red': (0.2, 1.0),
    # hair
    'hair_tone': (0.0, 1.0),  # index into the hair palette (continuous blend)
    'hairline': (14.0, 30.0),  # y of the hairline at the centre
    'hair_volume': (2.0, 10.0),
    'hair_part': (-1.0, 1.0),  # asymmetry of the hairline
    # ears
    'ear_size': (7.0, 11.0),
}

#: Categorical identity parameters and their number of values.
CATEGORICAL_SIZES: Dict[str, int] = {
    # 0 shaved, 1 short, 2 fringe, 3 long, 4 curly volume, 5 covered by a cap of hair
    'hair_style': 6,
    # 0 none, 1 stubble, 2 moustache, 3 beard
    'facial_hair': 4,
    # 0 none, 1 freckles, 2 one or two moles, 3 scar
    'marks': 4,
}

_CONT_NAMES = tuple(CONTINUOUS_RANGES)
_CAT_NAMES = tuple(CATEGORICAL_SIZES)


@dataclass(frozen=True)
class FaceIdentity:
    """The fixed parameters of one synthetic person.

    Args:
        index (int): Global identity index (training identities first, then test).
        params (dict): Continuous parameters, keys of :data:`CONTINUOUS_RANGES`.
        categories (dict): Categorical parameters, keys of :data:`CATEGORICAL_SIZES`.
        texture_seed (int): Seed of the skin texture field and of the marks' positions,
            so that texture and moles stay the same in every image of the person.
    """

    index: int
    params: Dict[str, float]
    categories: Dict[str, int]
    texture_seed: int

    def __getattr__(self, name: str):
        # Parameters read like attributes (``ident.eye_y``) in the renderer.
        for store in ('params', 'categories'):
            values = object.__getattribute__(self, store)
            if name in values:
                return values[name]
        raise AttributeError(name)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable form (used by the manifest and tests)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def stream_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``keys``.

    Every random draw of SynthFace comes from such a generator keyed by what it is for
    (stream, identity, image), so the output does not depend on the order or the process
    in which items are generated.

    Args:
        seed (int): The data set seed.
        *keys (int): Non-negative integers naming the item.

    Returns:
        numpy.random.Generator: A PCG64 generator.

    Examples:
        >>> a = stream_rng(0, 1, 2).random()
        >>> b = stream_rng(0, 1, 2).random()
        >>> a == b
        True
    """
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])


def sample_identity(rng: np.random.Generator, index: int) -> FaceIdentity:
    """Draw one identity's parameters.

    Args:
        rng (numpy.random.Generator): Source of randomness.
        index (int): The identity index to store.

    Returns:
        FaceIdentity: The new identity.
    """
    params = {
        name: float(rng.uniform(lo, hi))
        for name, (lo, hi) in CONTINUOUS_RANGES.items()
    }
    # Categorical frequencies are skewed the way a crowd is: most people have short or
    # long hair and no facial hair or marks.
    cats = {
        'hair_style':
        int(rng.choice(6, p=[0.08, 0.32, 0.16, 0.26, 0.10, 0.08])),
        'facial_hair': int(rng.choice(4, p=[0.55, 0.17, 0.12, 0.16])),
        'marks': int(rng.choice(4, p=[0.55, 0.2, 0.18, 0.07])),
    }
    # Long hair with a full beard is rare; correlate them the way people do.
    if cats['hair_style'] == 3 and cats['facial_hair'] == 3 and rng.random() < 0.7:
        cats['facial_hair'] = 0
    return FaceIdentity(
        index=int(index),
        params=params,
        categories=cats,
        texture_seed=int(rng.integers(0, 2**31 - 1)))


def identity_vector(identity: FaceIdentity) -> np.ndarray:
    """The identity as a vector in the unit cube, plus one-hot categories.

    Continuous parameters are mapped to [0, 1] by their ranges; each categorical
    parameter becomes a one-hot block scaled by ``1/sqrt(2)`` so that a different value
    adds exactly 1 to the squared distance.

    Args:
        identity (FaceIdentity): The identity.

    Returns:
        numpy.ndarray: float64 vector of length
        ``len(CONTINUOUS_RANGES) + sum(CATEGORICAL_SIZES.values())``.
    """
    cont = [(identity.params[n] - lo) / (hi - lo)
            for n, (lo, hi) in CONTINUOUS_RANGES.items()]
    onehots = []
    for name, size in CATEGORICAL_SIZES.items():
        block = np.zeros(size)
        block[identity.categories[name]] = 1.0 / np.sqrt(2.0)
        onehots.append(block)
    return np.concatenate([np.asarray(cont), *onehots])


def identity_distance(a: FaceIdentity, b: FaceIdentity) -> float:
    """Euclidean distance of two identities in the normalised parameter space.

    Two independent uniform identities are typically about 2.6 apart (each of the 36
    continuous parameters contributes 1/6 in expectation); a distance below ~1 means
    they differ in few visible ways.

    Args:
        a (FaceIdentity): First identity.
        b (FaceIdentity): Second identity.

    Returns:
        float: The distance.
    """
    return float(np.linalg.norm(identity_vector(a) - identity_vector(b)))


def sample_identities(num: int,
                      seed: int,
                      min_distance: float = 1.5,
                      max_attempts: int = 50) -> List[FaceIdentity]:
    """Draw ``num`` identities, no two of them closer than ``min_distance``.

    Candidate ``k`` for identity ``i`` comes from ``stream_rng(seed, 0, i, k)``, so the
    first ``n`` identities are the same whatever ``num`` is.

    Args:
        num (int): How many identities.
        seed (int): The data set seed.
        min_distance (float): Smallest allowed :func:`identity_distance` between any two
            identities. Defaults to 1.5 (the nearest of 600 unconstrained
            identities is typically 1.4-2.0 away).
        max_attempts (int): Candidates tried per identity before giving up.

    Returns:
        list[FaceIdentity]: Identities with indices ``0..num-1``.

    Raises:
        ConfigError: If no acceptable candidate is found within ``max_attempts`` (the
            threshold is too strict for this many identities).

    Examples:
        >>> ids = sample_identities(4, seed=0)
        >>> min(identity_distance(a, b) for a in ids for b in ids if a is not b) >= 1.5
        True
    """
    accepted: List[FaceIdentity] = []
    vectors = np.zeros((0, len(identity_vector(
        sample_identity(stream_rng(seed, 0, 0, 0), 0)))))
    for i in range(num):
        for attempt in range(max_attempts):
            cand = sample_identity(stream_rng(seed, 0, i, attempt), i)
            vec = identity_vector(cand)
            if len(vectors) == 0 or np.min(
                    np.linalg.norm(vectors - vec, axis=1)) >= min_distance:
                accepted.append(cand)
                vectors = np.vstack([vectors, vec])
                break
        else:
            raise ConfigError(
                f'SynthFace: no identity {i} at distance >= {min_distance} from the '
                f'others after {max_attempts} attempts; lower min_distance or ask '
                'for fewer identities')
    return accepted


def nearest_distances(identities: Sequence[FaceIdentity]) -> np.ndarray:
    """Distance from each identity to its nearest other identity."""
    vecs = np.stack([identity_vector(x) for x in identities])
    d = np.linalg.norm(vecs[:, None] - vecs[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)
