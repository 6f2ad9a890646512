// Command franzgo-groups runs a consumer-group scenario with franz-go (kgo + kadm)
// against a broker and prints what it observed as one JSON object on the last stdout
// line; compat/tests/test_groups_franzgo.py asserts on it.
//
//	franzgo-groups BOOTSTRAP group TOPIC GROUP PARTITIONS COUNT
//	franzgo-groups BOOTSTRAP group848 TOPIC GROUP PARTITIONS COUNT
//
// Two kgo group consumers (franz-go's default cooperative-sticky balancer, manual
// synchronous commits, BlockRebalanceOnPoll): c1 reads half of COUNT records alone, c2
// joins, both read to the end. Then kadm describes the group, fetches its offsets,
// computes the lag, both consumers leave, and kadm deletes the group. With group848 the
// consumers use KIP-848's consumer protocol (ServerSideBalancer: the broker assigns).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type out map[string]any

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func must(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

type member struct {
	name    string
	cl      *kgo.Client
	mu      sync.Mutex
	events  [][]any
	owned   map[int32]bool
	records [][]any
}

func parts(m map[string][]int32) []int32 {
	var ps []int32
	for _, p := range m {
		ps = append(ps, p...)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	if ps == nil {
		ps = []int32{}
	}
	return ps
}

// serverSide: KIP-848's consumer protocol instead of the classic one.
var serverSide bool

func newMember(name, bootstrap, group, topic string) *member {
	m := &member{name: name, owned: map[int32]bool{}}
	var protocol []kgo.Opt
	if serverSide {
		protocol = append(protocol, kgo.Balancers(kgo.RangeBalancer()), kgo.ServerSideBalancer())
	}
	cl, err := kgo.NewClient(append(protocol,
		kgo.SeedBrokers(bootstrap),
		kgo.ClientID("compat-franzgo-"+name),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(6*time.Second),
		kgo.HeartbeatInterval(500*time.Millisecond),
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			ps := parts(a)
			m.events = append(m.events, []any{"assigned", ps})
			for _, p := range ps {
				m.owned[p] = true
			}
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, r map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			ps := parts(r)
			m.events = append(m.events, []any{"revoked", ps})
			for _, p := range ps {
				delete(m.owned, p)
			}
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, l map[string][]int32) {
			m.mu.Lock()
			defer m.mu.Unlock()
			ps := parts(l)
			m.events = append(m.events, []any{"lost", ps})
			for _, p := range ps {
				delete(m.owned, p)
			}
		}),
	)...)
	must(err, "new consumer "+name)
	m.cl = cl
	return m
}

// step polls once (at most 100 ms), commits what it got synchronously, and lets a
// pending rebalance proceed.
func (m *member) step() {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	fs := m.cl.PollFetches(ctx)
	cancel()
	var recs []*kgo.Record
	fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	for _, e := range fs.Errors() {
		if e.Err != context.DeadlineExceeded && e.Err != context.Canceled {
			fail("%s fetch error %s/%d: %v", m.name, e.Topic, e.Partition, e.Err)
		}
	}
	if len(recs) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		must(m.cl.CommitRecords(ctx, recs...), m.name+" commit")
		cancel()
		m.mu.Lock()
		for _, r := range recs {
			m.records = append(m.records, []any{r.Partition, r.Offset, string(r.Value)})
		}
		m.mu.Unlock()
	}
	m.cl.AllowRebalance()
}

func (m *member) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.records)
}

func (m *member) ownedList() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps := []int32{}
	for p := range m.owned {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}

func until(ms []*member, cond func() bool, what string) {
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			state := out{}
			for _, m := range ms {
				state[m.name] = out{"owned": m.ownedList(), "n": m.count(), "events": m.events}
			}
			b, _ := json.Marshal(state)
			fail("timed out waiting for %s: %s", what, b)
		}
		for _, m := range ms {
			m.step()
		}
	}
}

func main() {
	if len(os.Args) < 7 || (os.Args[2] != "group" && os.Args[2] != "group848") {
		fail("usage: franzgo-groups BOOTSTRAP (group|group848) TOPIC GROUP PARTITIONS COUNT")
	}
	serverSide = os.Args[2] == "group848"
	bootstrap, topic, group := os.Args[1], os.Args[3], os.Args[4]
	np, _ := strconv.Atoi(os.Args[5])
	count, _ := strconv.Atoi(os.Args[6])
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()

	admCl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ClientID("compat-franzgo-admin"))
	must(err, "admin client")
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	_, err = adm.CreateTopic(ctx, int32(np), 1, nil, topic)
	must(err, "create topic")
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil && md.Topics[topic].Err == nil && len(md.Topics[topic].Partitions) == np {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	prod, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	must(err, "producer")
	var recs []*kgo.Record
	for i := 0; i < count; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % np),
			Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("v%d", i))})
	}
	must(prod.ProduceSync(ctx, recs...).FirstErr(), "produce")
	prod.Close()

	c1 := newMember("c1", bootstrap, group, topic)
	ms := []*member{c1}
	until(ms, func() bool { return c1.count() >= count/2 }, "c1 reads half")
	c2 := newMember("c2", bootstrap, group, topic)
	ms = append(ms, c2)
	until(ms, func() bool {
		return c1.count()+c2.count() >= count && len(c2.ownedList()) > 0 &&
			len(c1.ownedList())+len(c2.ownedList()) == np
	}, "all records and a shared assignment")
	end := time.Now().Add(time.Second)
	for time.Now().Before(end) {
		for _, m := range ms {
			m.step()
		}
	}

	res := out{"c1_events": c1.events, "c2_events": c2.events,
		"c1_final": c1.ownedList(), "c2_final": c2.ownedList()}
	all := append(append([][]any{}, c1.records...), c2.records...)
	res["records"] = all

	described, err := adm.DescribeGroups(ctx, group)
	must(err, "describe")
	d := described[group]
	res["describe"] = out{"state": d.State, "protocol_type": d.ProtocolType, "protocol": d.Protocol,
		"members": len(d.Members), "err": fmt.Sprint(d.Err)}
	offs, err := adm.FetchOffsets(ctx, group)
	must(err, "fetch offsets")
	committed := out{}
	for p, o := range offs[topic] {
		committed[strconv.Itoa(int(p))] = o.At
	}
	res["committed"] = committed
	lags, err := adm.Lag(ctx, group)
	must(err, "lag")
	lag := out{}
	for p, l := range lags[group].Lag[topic] {
		lag[strconv.Itoa(int(p))] = l.Lag
	}
	res["lag"] = lag

	// Leave (LeaveGroup on close), then delete the group.
	c1.cl.Close()
	c2.cl.Close()
	dr, err := adm.DeleteGroups(ctx, group)
	must(err, "delete groups")
	res["deleted"] = fmt.Sprint(dr[group].Err)
	dr, err = adm.DeleteGroups(ctx, group)
	must(err, "delete groups again")
	res["deleted_again"] = fmt.Sprint(dr[group].Err)

	b, err := json.Marshal(res)
	must(err, "json")
	fmt.Println(string(b))
}
