import random

from remix_engine.buffer import Group, ReplayBuffer, Sample


def _group(version: int, g: int, size: int = 2) -> Group:
    gid = f"s{version}-g{g}"
    return Group(gid, version, [Sample(uid=f"{gid}-r{j}", prompt_id="p", group_id=gid, prompt_ids=[1], response_ids=[2, 3],
                                       behavior_logprobs=[-0.1, -0.2], reward=1.0, advantage=0.5,
                                       policy_version=version, step=version) for j in range(size)])


def test_window_keeps_only_the_last_n_policies():
    buf = ReplayBuffer(window=2)
    for v in (1, 2, 3):
        buf.push(v, [_group(v, 0), _group(v, 1)])
    assert buf.versions == [2, 3]
    assert len(buf) == 8


def test_sampling_draws_whole_distinct_groups_from_every_lag():
    buf = ReplayBuffer(window=2)
    buf.push(1, [_group(1, g) for g in range(10)])
    buf.push(2, [_group(2, g) for g in range(10)])
    rng = random.Random(0)
    counts = {1: 0, 2: 0}
    for _ in range(400):
        groups = buf.sample_groups(4, rng)
        assert len({g.group_id for g in groups}) == 4
        assert all(len(g.samples) == 2 for g in groups)
        for g in groups:
            counts[g.policy_version] += 1
    # uniform over lags: each version supplies about half of the draws
    assert abs(counts[1] - counts[2]) < 0.15 * (counts[1] + counts[2])


def test_sampling_more_than_available_returns_everything_once():
    buf = ReplayBuffer(window=2)
    buf.push(1, [_group(1, 0)])
    assert len(buf.sample_groups(5, random.Random(0))) == 1
    assert ReplayBuffer(2).sample_groups(3, random.Random(0)) == []


def test_state_round_trip_preserves_reuse_counts():
    buf = ReplayBuffer(window=2)
    buf.push(4, [_group(4, 0)])
    buf.batches[4][0].samples[0].reuse_count = 3
    other = ReplayBuffer(window=1)
    other.load_state_dict(buf.state_dict())
    assert other.window == 2 and other.versions == [4]
    assert other.batches[4][0].samples[0].reuse_count == 3
    assert other.batches[4][0].samples[1] == buf.batches[4][0].samples[1]
