"""InMemoryConfig: defaults, keyword construction, the builder, profiles and validation."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta

import pytest

SEED_DEFAULTS = {
    "max_queue_size": None,
    "max_topics": None,
    "enable_persistence": True,
    "maintain_order": True,
    "enable_stats": False,
    "default_message_ttl": None,
    "cleanup_interval": 60.0,
    "max_subscribers_per_topic": None,
    "overflow": "error",
}


def fields_of(config):
    return {name: getattr(config, name) for name in SEED_DEFAULTS}


def test_defaults_follow_the_seed_table(k):
    assert fields_of(k.InMemoryConfig()) == SEED_DEFAULTS
    assert isinstance(k.InMemoryConfig().cleanup_interval, float)


@pytest.mark.parametrize("profile", ["default", "new"])
def test_default_and_new_profiles_are_the_defaults(k, profile):
    config = getattr(k.InMemoryConfig, profile)()
    assert isinstance(config, k.InMemoryConfig)
    assert fields_of(config) == SEED_DEFAULTS
    assert config == k.InMemoryConfig()


def test_keyword_construction(k):
    config = k.InMemoryConfig(
        max_queue_size=1000,
        max_topics=100,
        enable_persistence=False,
        maintain_order=False,
        enable_stats=True,
        default_message_ttl=300,
        cleanup_interval=5,
        max_subscribers_per_topic=7,
        overflow="error",
    )
    assert fields_of(config) == {
        "max_queue_size": 1000,
        "max_topics": 100,
        "enable_persistence": False,
        "maintain_order": False,
        "enable_stats": True,
        "default_message_ttl": 300.0,
        "cleanup_interval": 5.0,
        "max_subscribers_per_topic": 7,
        "overflow": "error",
    }
    assert isinstance(config.default_message_ttl, float)
    assert isinstance(config.cleanup_interval, float)


def test_positional_construction_is_not_needed_for_keywords(k):
    # Keyword arguments may come in any order.
    a = k.InMemoryConfig(enable_stats=True, max_topics=3)
    b = k.InMemoryConfig(max_topics=3, enable_stats=True)
    assert a == b


def test_for_testing_profile(k):
    config = k.InMemoryConfig.for_testing()
    assert config.max_queue_size == 100
    assert config.max_topics == 10
    assert config.max_subscribers_per_topic == 5
    assert config.enable_stats is True
    assert config.enable_persistence is True
    assert config.maintain_order is True


@pytest.mark.parametrize("profile", ["high_performance", "for_high_performance"])
def test_high_performance_profiles(k, profile):
    config = getattr(k.InMemoryConfig, profile)()
    assert config.max_queue_size is None
    assert config.max_topics is None
    assert config.max_subscribers_per_topic is None
    assert config.maintain_order is False
    assert config.enable_stats is False


def test_high_performance_alias_is_equal(k):
    assert k.InMemoryConfig.high_performance() == k.InMemoryConfig.for_high_performance()


# -- builder ------------------------------------------------------------------------------------

BUILDER = [
    ("with_max_queue_size", 1000, "max_queue_size", 1000),
    ("with_max_queue_size", None, "max_queue_size", None),
    ("with_max_topics", 100, "max_topics", 100),
    ("with_stats", True, "enable_stats", True),
    ("with_maintain_order", False, "maintain_order", False),
    ("with_message_ttl", 300, "default_message_ttl", 300.0),
    ("with_message_ttl", None, "default_message_ttl", None),
    ("with_cleanup_interval", 1.5, "cleanup_interval", 1.5),
    ("with_persistence", False, "enable_persistence", False),
    ("with_max_subscribers_per_topic", 3, "max_subscribers_per_topic", 3),
    ("with_overflow", "error", "overflow", "error"),
]


@pytest.mark.parametrize(
    "method,arg,field,expected", BUILDER, ids=[f"{b[0]}({b[1]!r})" for b in BUILDER]
)
def test_builder_returns_a_new_config_and_leaves_the_original(k, method, arg, field, expected):
    base = k.InMemoryConfig(max_queue_size=50, default_message_ttl=10)
    before = fields_of(base)
    built = getattr(base, method)(arg)
    assert isinstance(built, k.InMemoryConfig)
    assert built is not base
    assert getattr(built, field) == expected
    assert fields_of(base) == before
    # Every other field is carried over.
    for name, value in before.items():
        if name != field:
            assert getattr(built, name) == value


def test_seed_builder_chain(k):
    config = (
        k.InMemoryConfig.new()
        .with_max_queue_size(1000)
        .with_max_topics(100)
        .with_stats(True)
        .with_maintain_order(True)
        .with_message_ttl(timedelta(seconds=300))
    )
    assert config.max_queue_size == 1000
    assert config.max_topics == 100
    assert config.enable_stats is True
    assert config.maintain_order is True
    assert config.default_message_ttl == 300.0


def test_config_is_frozen(k):
    config = k.InMemoryConfig()
    with pytest.raises(AttributeError):
        config.max_topics = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.enable_stats = True  # type: ignore[misc]
    # A frozen, slotted dataclass: CPython 3.11 reports a new attribute as TypeError, later
    # versions as AttributeError; either way it is refused.
    with pytest.raises((AttributeError, TypeError)):
        config.brand_new_field = 1  # type: ignore[attr-defined]
    assert fields_of(config) == SEED_DEFAULTS


def test_config_is_hashable_and_comparable(k):
    a = k.InMemoryConfig(max_topics=3)
    b = k.InMemoryConfig().with_max_topics(3)
    assert a == b
    assert hash(a) == hash(b)
    assert a != k.InMemoryConfig()


def test_config_is_a_dataclass_with_documented_fields(k):
    names = {f.name for f in dataclasses.fields(k.InMemoryConfig)}
    assert set(SEED_DEFAULTS) <= names


# -- durations ----------------------------------------------------------------------------------


def test_timedelta_durations_are_stored_as_float_seconds(k):
    config = k.InMemoryConfig(
        default_message_ttl=timedelta(minutes=5), cleanup_interval=timedelta(milliseconds=250)
    )
    assert config.default_message_ttl == 300.0
    assert type(config.default_message_ttl) is float
    assert config.cleanup_interval == 0.25
    assert type(config.cleanup_interval) is float


def test_builder_accepts_timedelta(k):
    config = (
        k.InMemoryConfig()
        .with_message_ttl(timedelta(seconds=300))
        .with_cleanup_interval(timedelta(seconds=60))
    )
    assert config.default_message_ttl == 300.0
    assert config.cleanup_interval == 60.0
    assert type(config.cleanup_interval) is float


def test_timedelta_and_seconds_configs_are_equal(k):
    assert k.InMemoryConfig(default_message_ttl=timedelta(seconds=2)) == k.InMemoryConfig(
        default_message_ttl=2
    )


# -- invalid values -----------------------------------------------------------------------------

INVALID = [
    ("max_queue_size", 0),
    ("max_queue_size", -1),
    ("max_topics", 0),
    ("max_topics", -5),
    ("max_subscribers_per_topic", 0),
    ("max_subscribers_per_topic", -1),
    ("default_message_ttl", 0),
    ("default_message_ttl", -1.0),
    ("default_message_ttl", math.nan),
    ("default_message_ttl", math.inf),
    ("default_message_ttl", timedelta(0)),
    ("default_message_ttl", timedelta(seconds=-3)),
    ("cleanup_interval", 0),
    ("cleanup_interval", -0.5),
    ("cleanup_interval", math.nan),
    ("cleanup_interval", math.inf),
    ("overflow", "explode"),
    ("overflow", ""),
]


@pytest.mark.parametrize("field,value", INVALID, ids=[f"{f}={v!r}" for f, v in INVALID])
def test_invalid_values_raise_invalid_config_naming_the_field(k, field, value):
    with pytest.raises(k.InvalidConfig) as info:
        k.InMemoryConfig(**{field: value})
    assert info.value.field == field
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, k.InMemoryError)
    assert isinstance(info.value, k.KincirError)
    assert field in str(info.value)


BUILDER_INVALID = [
    ("with_max_queue_size", 0, "max_queue_size"),
    ("with_max_topics", -1, "max_topics"),
    ("with_max_subscribers_per_topic", 0, "max_subscribers_per_topic"),
    ("with_message_ttl", 0, "default_message_ttl"),
    ("with_message_ttl", math.nan, "default_message_ttl"),
    ("with_cleanup_interval", -1, "cleanup_interval"),
    ("with_cleanup_interval", math.inf, "cleanup_interval"),
    ("with_overflow", "sometimes", "overflow"),
]


@pytest.mark.parametrize(
    "method,value,field", BUILDER_INVALID, ids=[f"{m}({v!r})" for m, v, _ in BUILDER_INVALID]
)
def test_builder_validates_too(k, method, value, field):
    base = k.InMemoryConfig()
    with pytest.raises(k.InvalidConfig) as info:
        getattr(base, method)(value)
    assert info.value.field == field
    assert fields_of(base) == SEED_DEFAULTS


WRONG_TYPES = [
    ("max_topics", "5"),
    ("max_topics", 5.0),
    ("max_topics", True),
    ("max_queue_size", True),
    ("max_queue_size", "100"),
    ("max_queue_size", 1.5),
    ("max_subscribers_per_topic", False),
    ("enable_stats", 1),
    ("enable_stats", "yes"),
    ("enable_stats", None),
    ("enable_persistence", 0),
    ("maintain_order", "true"),
    ("default_message_ttl", "300"),
    ("default_message_ttl", True),
    ("default_message_ttl", [1]),
    ("cleanup_interval", None),
    ("cleanup_interval", "60"),
    ("cleanup_interval", True),
    ("overflow", 1),
    ("overflow", None),
]


@pytest.mark.parametrize("field,value", WRONG_TYPES, ids=[f"{f}={v!r}" for f, v in WRONG_TYPES])
def test_wrong_types_raise_type_error_naming_the_field(k, field, value):
    with pytest.raises(TypeError, match=field):
        k.InMemoryConfig(**{field: value})


def test_wrong_type_is_not_reported_as_invalid_config(k):
    with pytest.raises(TypeError) as info:
        k.InMemoryConfig(max_topics="5")
    assert not isinstance(info.value, k.InvalidConfig)


def test_unknown_keyword_raises_type_error(k):
    with pytest.raises(TypeError):
        k.InMemoryConfig(max_queue=10)  # type: ignore[call-arg]


def test_valid_edge_values_are_accepted(k):
    config = k.InMemoryConfig(
        max_queue_size=1,
        max_topics=1,
        max_subscribers_per_topic=1,
        default_message_ttl=0.001,
        cleanup_interval=0.001,
    )
    assert config.max_queue_size == 1
    assert config.default_message_ttl == 0.001


def test_invalid_config_carries_its_value(k):
    with pytest.raises(k.InvalidConfig) as info:
        k.InMemoryConfig(max_topics=-7)
    assert info.value.value == -7


def test_broker_keeps_its_config(k):
    config = k.InMemoryConfig.for_testing()
    broker = k.new_broker(config)
    assert broker.config == config
