"""The SimPy executor against hand-derived exact values where links are shared (naive's
root, a ring across an oversubscribed core, flows joining a link), then cross-checked with
the closed forms, derived from the same model. Times are in seconds, sizes in bytes,
float32 elements."""

import itertools

import pytest
import simpy
from collbench.algorithms import build
from collbench.sim import analytic
from collbench.sim.executor import simulate
from collbench.sim.fabric import Fabric, Flow, Link
from collbench.sim.network import NetworkSpec, SpecError
from collbench.sim.topology import Topology

from tests.sim_data import even_count

B = 12.5e9  # 100 Gb/s per NIC
ALPHA, GAMMA, OVERHEAD = 1.3e-6, 2.0e-10, 3.0e-7
IDEAL = NetworkSpec(topology="ideal", bandwidth=B, latency=ALPHA, gamma=GAMMA, overhead=OVERHEAD)
Q = analytic.Params(ALPHA, 1 / B, GAMMA, OVERHEAD)
RANKS = [2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 16, 17, 31, 32, 33, 48, 63, 64]


def test_half_duplex_ports_halve_the_speed_of_exchanges_only():
    """Ring at P=2 exchanges both ways every step (β doubles); naive never does."""
    n = 4 * 2**20
    spec = NetworkSpec(topology="half-duplex", bandwidth=B, latency=0.0)
    assert simulate(build("ring", 2, n // 4), spec, 4).time == pytest.approx(2 * n / B, rel=1e-12)
    assert simulate(build("naive", 2, n // 4), spec, 4).time == pytest.approx(2 * n / B, rel=1e-12)


def test_naive_on_a_switch_is_bound_by_the_roots_links():
    """P-1 messages share the root's down link, then its up link: the β term is 2(P-1)nβ
    instead of the 2nβ of a network where the root could receive them all at once."""
    p, n = 8, 4 * 2**20
    spec = NetworkSpec(topology="switch", bandwidth=B, latency=ALPHA, gamma=GAMMA)
    time = simulate(build("naive", p, n // 4), spec, 4).time
    assert time == pytest.approx(2 * ALPHA + 2 * (p - 1) * n / B + (p - 1) * n * GAMMA, rel=1e-12)
    ideal = simulate(build("naive", p, n // 4), spec.with_overrides(topology="ideal"), 4).time
    assert ideal == pytest.approx(2 * ALPHA + 2 * n / B + (p - 1) * n * GAMMA, rel=1e-12)


def fat_tree(placement):
    return NetworkSpec(topology="fat-tree", bandwidth=B, latency=ALPHA, gamma=GAMMA, overhead=OVERHEAD,
                       hosts_per_leaf=4, oversubscription=2.0, placement=placement)


def test_ring_within_the_core_capacity_runs_at_link_speed():
    """8 nodes, 4 per leaf, 2:1: with block placement only 3->4 and 7->0 cross the core,
    one flow per leaf uplink of 2 NICs' capacity, so nothing is shared."""
    p, count = 8, 2**20
    time = simulate(build("ring", p, count), fat_tree("block"), 4).time
    assert time == pytest.approx(analytic.ring(p, 4 * count, Q), rel=1e-12)


def test_ring_crossing_a_2_to_1_core_is_slower_by_the_expected_factor():
    """Cyclic placement alternates leaves, so all 4 ring edges leaving a leaf share its
    uplink of 4 NICs / 2 = 2 NICs: each flow gets half a NIC, β doubles."""
    p, count = 8, 2**20
    n = 4 * count
    time = simulate(build("ring", p, count), fat_tree("cyclic"), 4).time
    step = OVERHEAD + ALPHA + 2 * (n / p) / B  # half a NIC each
    assert time == pytest.approx(2 * (p - 1) * step + (p - 1) * (n / p) * GAMMA, rel=1e-12)
    no_latency = fat_tree("cyclic").with_overrides(latency=0.0, gamma=0.0, overhead=0.0)
    ratio = (simulate(build("ring", p, count), no_latency, 4).time
             / simulate(build("ring", p, count), no_latency.with_overrides(placement="block"), 4).time)
    assert ratio == pytest.approx(2.0, rel=1e-12)


def test_ranks_of_one_node_use_the_intra_node_fabric():
    spec = NetworkSpec(topology="switch", bandwidth=B, latency=ALPHA, ranks_per_node=2,
                       intra_bandwidth=20 * B, intra_latency=0.1 * ALPHA)
    count = 2**20
    time = simulate(build("ring", 2, count), spec, 4).time
    assert time == pytest.approx(analytic.ring(2, 4 * count, analytic.Params(0.1 * ALPHA, 1 / (20 * B), 0)),
                                 rel=1e-12)


def test_two_ranks_share_their_nodes_nic():
    """4 ranks, 2 per node, no intra-node fabric: in ring step 0 ranks 1 and 3 send across
    nodes while 0 and 2 send within; all four messages leave through their node's one NIC,
    so each node's up link carries two flows at half speed: β doubles."""
    spec = NetworkSpec(topology="switch", bandwidth=B, latency=0.0, ranks_per_node=2)
    count = 2**20
    time = simulate(build("ring", 4, count), spec, 4).time
    assert time == pytest.approx(2 * 3 * (4 * count / 4) * 2 / B, rel=1e-12)


def test_ring_on_a_torus_ring_uses_one_hop_per_message():
    spec = NetworkSpec(topology="torus", bandwidth=B, latency=ALPHA, gamma=GAMMA, overhead=OVERHEAD)
    count = 8 * 2**16
    assert simulate(build("ring", 8, count), spec, 4).time == pytest.approx(
        analytic.ring(8, 4 * count, Q), rel=1e-12)


def test_rabenseifner_on_a_torus_pays_for_hops_and_sharing():
    spec = NetworkSpec(topology="torus", bandwidth=B, latency=ALPHA, gamma=GAMMA, overhead=OVERHEAD)
    count = 8 * 2**16
    assert simulate(build("rabenseifner", 8, count), spec, 4).time > analytic.rabenseifner(8, 4 * count, Q)


@pytest.mark.parametrize("p", RANKS)
@pytest.mark.parametrize("algorithm", ["naive", "ring", "rabenseifner"])
def test_cross_check_ideal_network_against_the_closed_forms(algorithm, p):
    """Cross-check with forms derived from the same model (no contention on ideal)."""
    for k in (1, 7, 1000):
        count = even_count(p, k)
        simulated = simulate(build(algorithm, p, count), IDEAL, 4).time
        closed = analytic.predict(algorithm, p, 4 * count, Q, "ideal")
        assert simulated == pytest.approx(closed, rel=1e-9), (algorithm, p, count)


@pytest.mark.parametrize("p", [2, 3, 5, 8, 13, 16])
@pytest.mark.parametrize("algorithm", ["naive", "ring", "rabenseifner"])
@pytest.mark.parametrize("topology", ["switch", "half-duplex"])
def test_cross_check_switches_against_their_closed_forms(topology, algorithm, p):
    """Cross-check with forms derived from the same model. On a switch only naive differs
    from ideal: its root's links are shared (the closed form includes the broadcast's
    staggered starts, one overhead apart). With half-duplex ports, exchanges in both
    directions also share each rank's port."""
    network, q = IDEAL.with_overrides(topology=topology), Q
    if topology == "half-duplex" and algorithm == "rabenseifner" and p & (p - 1):
        # A folded rank's first core partner posted long before, so its message starts one
        # overhead before the reply and has the port alone meanwhile: exact only with o = 0.
        network, q = network.with_overrides(overhead=0.0), analytic.Params(ALPHA, 1 / B, GAMMA, 0.0)
    for k in (1, 1000):
        count = even_count(p, k)
        simulated = simulate(build(algorithm, p, count), network, 4).time
        assert simulated == pytest.approx(analytic.predict(algorithm, p, 4 * count, q, topology), rel=1e-9)


def test_one_rank_and_empty_buffers_take_no_time():
    assert simulate(build("ring", 1, 100), IDEAL).time == 0.0
    assert simulate(build("rabenseifner", 5, 0), IDEAL).time == 0.0


def test_uneven_chunks_stay_within_one_element_per_step_of_the_closed_form():
    p, count = 7, 1000003
    time = simulate(build("ring", p, count), IDEAL, 4).time
    bound = 2 * (p - 1) * 4 * (1 / B + GAMMA)
    assert abs(time - analytic.ring(p, 4 * count, Q)) <= bound


def run_flows(capacity_a, flows):
    """Start flows ``(start_time, size, links)`` on a fresh fabric; return arrival times."""
    env = simpy.Environment()
    fabric = Fabric(env)
    arrivals = {}

    def starter(i, at, size, links):
        yield env.timeout(at)
        fabric.start(Flow(links, 0.5, size, lambda t: arrivals.__setitem__(i, t)))

    for i, (at, size, links) in enumerate(flows):
        env.process(starter(i, at, size, links))
    env.run()
    return arrivals


def test_flows_share_a_link_fairly_and_speed_up_when_one_leaves():
    """1 B/s link: A (3 B) alone for 1 s, then A and B (1 B) at 0.5 B/s until B is done at
    3 s, then A alone finishes its last byte at 4 s; arrivals add the 0.5 s latency."""
    link = Link("l", 1.0, 0.0)
    assert run_flows(1.0, [(0.0, 3.0, (link,)), (1.0, 1.0, (link,))]) == {0: 4.5, 1: 3.5}


def test_max_min_gives_spare_capacity_to_the_unconstrained_flow():
    """f1 on L1 (1 B/s); f2 on L1 and L2 (0.25 B/s): f2 gets 0.25, f1 the remaining 0.75."""
    l1, l2 = Link("l1", 1.0, 0.0), Link("l2", 0.25, 0.0)
    arrivals = run_flows(1.0, [(0.0, 0.75, (l1,)), (0.0, 0.25, (l1, l2))])
    assert arrivals == {0: pytest.approx(1.5), 1: pytest.approx(1.5)}



def test_flows_joining_one_at_a_time_each_slow_the_others_down():
    """Four flows of 4 B join a 1 B/s link at 0, 1, 2 and 3 s. By 3 s they have 13/6, 19/6,
    11/3 and 4 B left; at 1/4 B/s each the first ends at 3 + 4·13/6 s, leaving 1, 3/2 and
    11/6 B; then 3 share (1 B takes 3 s), 2 share (1/2 B takes 1 s), and the last sends its
    final 1/3 B alone, at 16 s: the link is never idle. Arrivals add the 0.5 s latency."""
    link = Link("l", 1.0, 0.0)
    arrivals = run_flows(1.0, [(float(i), 4.0, (link,)) for i in range(4)])
    first = 3 + 4 * 13 / 6
    ends = [first, first + 3, first + 4, first + 4 + 1 / 3]
    assert [arrivals[i] for i in range(4)] == pytest.approx([e + 0.5 for e in ends], rel=1e-12)
    assert ends[-1] == pytest.approx(16.0)


def test_a_flow_joining_many_costs_one_timer_not_one_event_per_rate_it_changes():
    """Naive's broadcast on a switch: P-1 flows join the root's up link one overhead apart,
    each changing the rates of those already there. The fabric keeps its completions in a
    heap of its own, so SimPy processes O(P) events, not O(P²)."""
    p = 128
    spec = NetworkSpec(topology="switch", bandwidth=B, latency=ALPHA, gamma=GAMMA, overhead=OVERHEAD)
    result = simulate(build("naive", p, 1 << 18), spec, 4)
    assert result.events < 10 * p

@pytest.mark.parametrize("topology", ["ideal", "switch", "half-duplex", "fat-tree", "torus"])
def test_every_shape_runs_every_algorithm_to_the_end(topology):
    """Several ranks per node, with and without an intra-node fabric, both placements: every
    rank finishes, and no shape beats the closed form of its fastest link."""
    for rpn, intra, placement, algorithm, p in itertools.product(
            (1, 2, 4), (0.0, 10 * B), ("block", "cyclic"), ("naive", "ring", "rabenseifner"), (3, 8)):
        spec = NetworkSpec(topology=topology, bandwidth=B, latency=ALPHA, ranks_per_node=rpn,
                           intra_bandwidth=intra, intra_latency=ALPHA / 10, hosts_per_leaf=2,
                           oversubscription=2, placement=placement, gamma=GAMMA, overhead=OVERHEAD)
        result = simulate(build(algorithm, p, even_count(p, 3)), spec, 4)
        assert all(t > 0 for t in result.rank_times)
        fastest = analytic.Params(ALPHA / 10 if intra else ALPHA, 1 / max(B, intra), GAMMA, OVERHEAD)
        lower = analytic.predict(algorithm, p, 4 * even_count(p, 3), fastest, "ideal")
        assert result.time >= lower * (1 - 1e-12)


def test_unmatched_messages_stop_the_run_with_a_reason():
    """A send met by a receive of another step, or never met, is an error, not a wrong time."""
    from collbench.algorithms import Kind, Op, Schedule

    send, recv = Op(Kind.SEND, 1, 0, 5), Op(Kind.RECV_COPY, 0, 0, 5)
    skewed = Schedule("skewed", 2, 10, (((send,), ()), ((), (recv,))))
    with pytest.raises(RuntimeError, match="send of step 0 meets rank 1's receive of step 1"):
        simulate(skewed, IDEAL)
    lonely = Schedule("lonely", 2, 10, (((send,),), ((),)))
    with pytest.raises(RuntimeError, match="deadlocked: rank 0"):
        simulate(lonely, IDEAL)


def test_a_large_ring_streams_its_steps():
    """The simulator reads each rank's steps as it goes and keeps none of them."""
    schedule = build("ring", 64, 64 * 1000)
    result = simulate(schedule, IDEAL.with_overrides(topology="switch"), 4)
    assert result.messages == 2 * 64 * 63
    assert not schedule.steps._built


def test_ranks_whose_steps_end_together_share_one_wake_up():
    """A ring of equal chunks on a switch: every rank's step ends at the same instant, so the
    run processes one wake-up per step, not one per rank and step, and every rank ends then."""
    p = 32
    result = simulate(build("ring", p, 32 * 1000), IDEAL.with_overrides(topology="switch"), 4)
    steps = 2 * (p - 1)
    assert result.events == steps + p  # one shared wake-up per step, one start per process
    assert len(set(result.rank_times)) == 1



def plain_max_min(monkeypatch):
    """Make the fabric compute every rate by progressive filling (no processor-sharing groups)."""
    monkeypatch.setattr(Fabric, "_join_group", lambda self, flow: False)


def test_naive_with_overhead_costs_work_linear_in_the_ranks(monkeypatch):
    """Naive's broadcast: P-1 flows join the root's up link one overhead apart. Without the
    group each join gave every flow on the link a new rate (P²/2 rates); with it a join
    costs one heap entry, and the rates set stay linear in P."""
    rates = []
    original = Fabric._set_rate
    monkeypatch.setattr(Fabric, "_set_rate", lambda self, flow, rate: rates.append(rate) or original(
        self, flow, rate))
    p = 512
    spec = NetworkSpec(topology="switch", bandwidth=B, latency=ALPHA, gamma=GAMMA, overhead=OVERHEAD)
    simulate(build("naive", p, 1 << 18), spec, 4)
    assert len(rates) < 4 * p


@pytest.mark.parametrize("algorithm, spec", [
    ("naive", NetworkSpec(topology="switch", bandwidth=B, latency=ALPHA, gamma=GAMMA, overhead=OVERHEAD)),
    ("naive", NetworkSpec(topology="half-duplex", bandwidth=B, latency=ALPHA, overhead=OVERHEAD)),
    ("ring", fat_tree("cyclic")),
    ("rabenseifner", fat_tree("cyclic").with_overrides(ranks_per_node=2)),
])
def test_processor_sharing_groups_give_the_rates_of_plain_max_min(monkeypatch, algorithm, spec):
    """Cross-check: the groups are an exact shortcut of progressive filling."""
    schedule = build(algorithm, 24, 24 * 4096)
    grouped = simulate(schedule, spec, 4).rank_times
    plain_max_min(monkeypatch)
    plain = simulate(build(algorithm, 24, 24 * 4096), spec, 4).rank_times
    assert grouped == pytest.approx(plain, rel=1e-12)


def test_a_flow_on_a_group_member_s_own_link_dissolves_the_group():
    """1 B/s link L shared by A (4 B) and B (4 B), each also on its own 1 B/s link. At 2 s
    C (1 B) joins A's own link: A's links are now both shared, so A, B, C are rated by
    max-min again: A 0.5 on both, B the other 0.5 of L, C 0.5 of A's link. At 2 s A and B
    have 3 B left; C ends at 4 s, then A and B share L to the end: 2 B left each at 0.5 B/s,
    both end at 8 s. Arrivals add the 0.5 s latency."""
    shared, own_a, own_b = Link("L", 1.0, 0.0), Link("a", 1.0, 0.0), Link("b", 1.0, 0.0)
    flows = [(0.0, 4.0, (shared, own_a)), (0.0, 4.0, (shared, own_b)), (2.0, 1.0, (own_a,))]
    arrivals = run_flows(1.0, flows)
    assert arrivals == {0: pytest.approx(8.5), 1: pytest.approx(8.5), 2: pytest.approx(4.5)}


def rails(rails, gpus, pcie=100 * B, **more):
    """Nodes of *gpus* ranks behind *rails* PCIe switches, a NIC (rail) on each."""
    return NetworkSpec(topology="pcie-rails", bandwidth=B, latency=ALPHA, nics_per_node=rails,
                       ranks_per_node=gpus, pcie_bandwidth=pcie, gamma=GAMMA, overhead=OVERHEAD, **more)


def test_one_rank_per_node_uses_one_rail_of_two():
    """The seed study's shape: one rank per node, two rails. The rank's GPU is behind the
    first switch, so its messages leave and arrive on rail 0 alone: the ring runs at one
    NIC's β, where a switch bonding the two NICs gives it half of that."""
    p, count = 8, 8 * 2**16
    q = analytic.Params(ALPHA, 1 / B, GAMMA, OVERHEAD)
    assert simulate(build("ring", p, count), rails(2, 1), 4).time == pytest.approx(
        analytic.ring(p, 4 * count, q), rel=1e-12)
    bonded = NetworkSpec(topology="switch", bandwidth=B, latency=ALPHA, nics_per_node=2, gamma=GAMMA,
                         overhead=OVERHEAD)
    assert simulate(build("ring", p, count), bonded, 4).time == pytest.approx(
        analytic.ring(p, 4 * count, analytic.Params(ALPHA, 1 / (2 * B), GAMMA, OVERHEAD)), rel=1e-12)


def test_two_gpus_behind_one_nic_share_it_and_a_rail_each_do_not():
    """Two nodes of two GPUs, ranks placed cyclically (node 0: ranks 0 and 2; node 1: 1 and
    3), no latency or costs. Every ring message crosses between the nodes; on node 0, 0->1
    and 2->3 leave together. With one rail they share its NIC, B/2 each, so each of the 6
    steps moves n/4 at B/2; with a rail per GPU (ranks 0 and 1 on rail 0, 2 and 3 on rail 1)
    each message has a NIC to itself and lands behind the receiver's own switch: at B."""
    n = 4 * 2**20
    bare = dict(latency=0.0, gamma=0.0, overhead=0.0, placement="cyclic")
    one = NetworkSpec(topology="pcie-rails", bandwidth=B, nics_per_node=1, ranks_per_node=2,
                      pcie_bandwidth=100 * B, **bare)
    assert simulate(build("ring", 4, n // 4), one, 4).time == pytest.approx(6 * (n / 4) / (B / 2), rel=1e-12)
    two = one.with_overrides(nics_per_node=2)
    assert simulate(build("ring", 4, n // 4), two, 4).time == pytest.approx(6 * (n / 4) / B, rel=1e-12)


def test_a_slow_pcie_link_bounds_the_gpu_not_the_nic():
    """PCIe at half a NIC's speed: the ring between nodes moves at B/2; between switches of
    one node a message crosses the GPU's link and the root complex, both at B/2."""
    p, count = 4, 4 * 2**16
    n = 4 * count
    slow = rails(2, 1, pcie=B / 2).with_overrides(latency=0.0, gamma=0.0, overhead=0.0)
    assert simulate(build("ring", p, count), slow, 4).time == pytest.approx(2 * (p - 1) * (n / p) * 2 / B,
                                                                           rel=1e-12)
    host = slow.with_overrides(ranks_per_node=2, intra_latency=0.0)  # ranks 0, 1 on one node
    topology = Topology(host, 2)
    links, latency, bandwidth, _ = topology.route(0, 1)
    assert [link.name for link in links] == ["rank0.pcie_up", "node0.switch0.root_up",
                                             "node0.switch1.root_down", "rank1.pcie_down"]
    assert bandwidth == B / 2 and latency == 0.0


def test_pcie_rails_needs_its_pcie_figure_and_only_it_takes_one():
    with pytest.raises(SpecError, match="pcie-rails topology needs pcie_bandwidth"):
        NetworkSpec(topology="pcie-rails")
    with pytest.raises(SpecError, match="pcie_bandwidth is a figure of the pcie-rails topology, not switch"):
        NetworkSpec(pcie_bandwidth=1e10)


def test_a_run_repeats_exactly():
    """Flows ending at one instant end in the order they were made, not in the order of the
    sets they sit in (object addresses), so the dataflow executor, whose decisions follow
    that order, gives the same times every time (it gave two different ones before)."""
    from collbench.sim.dataflow import simulate_dataflow

    spec = NetworkSpec(topology="switch", bandwidth=1e9, latency=0.0, ranks_per_node=4, placement="cyclic",
                       overhead=3e-6)
    times = {simulate_dataflow(build("rabenseifner", 12, 1000), spec, 4).rank_times for _ in range(8)}
    assert len(times) == 1
