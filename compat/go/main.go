// Command franzgo runs one compat scenario with franz-go (kgo + kadm) against a broker
// and prints what it observed as one JSON object on the last stdout line. The pytest
// side (compat/tests/test_franzgo.py) asserts on it.
//
//	franzgo BOOTSTRAP SCENARIO TOPIC [ARGS...]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

type rec struct {
	Partition int32      `json:"partition"`
	Offset    int64      `json:"offset"`
	Key       *string    `json:"key"`
	Value     *string    `json:"value"`
	Headers   [][]string `json:"headers"`
	Timestamp int64      `json:"timestamp"`
}

type out map[string]any

func strp(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}

// errInfo turns an error into {"code": Kafka error code or -1, "message": text}.
func errInfo(err error) any {
	if err == nil {
		return nil
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return out{"code": ke.Code, "name": ke.Message}
	}
	return out{"code": -1, "name": err.Error()}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func must(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func newClient(bootstrap string, opts ...kgo.Opt) *kgo.Client {
	base := []kgo.Opt{
		kgo.SeedBrokers(bootstrap),
		kgo.RequestTimeoutOverhead(10 * time.Second),
		kgo.RetryTimeout(30 * time.Second),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.FetchMaxWait(200 * time.Millisecond),
	}
	base = append(base, securityOpts()...)
	cl, err := kgo.NewClient(append(base, opts...)...)
	must(err, "new client")
	return cl
}

func createTopic(ctx context.Context, adm *kadm.Client, topic string, partitions int32, configs map[string]*string) {
	resp, err := adm.CreateTopic(ctx, partitions, 1, configs, topic)
	must(err, "create topic")
	must(resp.Err, "create topic "+topic)
	// Wait until every partition has a leader.
	for ctx.Err() == nil {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			if td, ok := md.Topics[topic]; ok && td.Err == nil && len(td.Partitions) == int(partitions) {
				ready := true
				for _, p := range td.Partitions {
					if p.Leader < 0 || p.Err != nil {
						ready = false
					}
				}
				if ready {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	fail("topic %s not ready", topic)
}

// consumeAll reads `want` records in total from the given partitions, from the start.
func consumeAll(ctx context.Context, bootstrap, topic string, partitions []int32, want int) []rec {
	offs := map[int32]kgo.Offset{}
	for _, p := range partitions {
		offs[p] = kgo.NewOffset().AtStart()
	}
	cl := newClient(bootstrap, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offs}))
	defer cl.Close()
	var got []rec
	for len(got) < want {
		if ctx.Err() != nil {
			fail("consumed %d of %d records before the deadline", len(got), want)
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				fail("fetch %s/%d: %v", t, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			hs := [][]string{}
			for _, h := range r.Headers {
				hs = append(hs, []string{h.Key, string(h.Value)})
			}
			got = append(got, rec{r.Partition, r.Offset, strp(r.Key), strp(r.Value), hs, r.Timestamp.UnixMilli()})
		})
	}
	sort.SliceStable(got, func(i, j int) bool {
		if got[i].Partition != got[j].Partition {
			return got[i].Partition < got[j].Partition
		}
		return got[i].Offset < got[j].Offset
	})
	return got
}

func codecOpt(name string) kgo.CompressionCodec {
	switch name {
	case "none":
		return kgo.NoCompression()
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	}
	fail("unknown codec %s", name)
	return kgo.NoCompression()
}

func acksOpt(a string) kgo.Acks {
	switch a {
	case "0":
		return kgo.NoAck()
	case "1":
		return kgo.LeaderAck()
	}
	return kgo.AllISRAcks()
}

// produceSync produces records in order, one in flight at a time per call batch, and
// returns (partition, offset, error) for each.
func produceSync(ctx context.Context, cl *kgo.Client, rs []*kgo.Record) []out {
	res := cl.ProduceSync(ctx, rs...)
	var o []out
	for _, r := range res {
		o = append(o, out{"partition": r.Record.Partition, "offset": r.Record.Offset, "error": errInfo(r.Err)})
	}
	return o
}

// Scenario "produce CODEC ACKS IDEMPOTENT(0|1) PARTITIONS COUNT": records i=0..COUNT-1,
// key "g<i>" (null when i%9==0), value "franz-<codec>-<i>" (null when i%11==5), header
// n=<i> (plus extra="x" when i%4==0), explicit partition i%PARTITIONS.
func scenarioProduce(ctx context.Context, bootstrap, topic string, args []string) out {
	codec, acks, idem := args[0], args[1], args[2] == "1"
	parts, _ := strconv.Atoi(args[3])
	count, _ := strconv.Atoi(args[4])
	adm := kadm.NewClient(newClient(bootstrap))
	defer adm.Close()
	createTopic(ctx, adm, topic, int32(parts), nil)
	opts := []kgo.Opt{kgo.ProducerBatchCompression(codecOpt(codec)), kgo.RequiredAcks(acksOpt(acks)),
		kgo.RecordPartitioner(kgo.ManualPartitioner())}
	if !idem {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	cl := newClient(bootstrap, opts...)
	defer cl.Close()
	var rs []*kgo.Record
	for i := 0; i < count; i++ {
		r := &kgo.Record{Topic: topic, Partition: int32(i % parts)}
		if i%9 != 0 {
			r.Key = []byte(fmt.Sprintf("g%d", i))
		}
		if i%11 != 5 {
			r.Value = []byte(fmt.Sprintf("franz-%s-%d", codec, i))
		}
		r.Headers = []kgo.RecordHeader{{Key: "n", Value: []byte(strconv.Itoa(i))}}
		if i%4 == 0 {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: "extra", Value: []byte("x")})
		}
		rs = append(rs, r)
	}
	produced := produceSync(ctx, cl, rs)
	var all []int32
	for p := 0; p < parts; p++ {
		all = append(all, int32(p))
	}
	return out{"produced": produced, "records": consumeAll(ctx, bootstrap, topic, all, count)}
}

// Scenario "keyed PARTITIONS COUNT": key "key-<i%101>", value "<i>", default partitioner.
func scenarioKeyed(ctx context.Context, bootstrap, topic string, args []string) out {
	parts, _ := strconv.Atoi(args[0])
	count, _ := strconv.Atoi(args[1])
	adm := kadm.NewClient(newClient(bootstrap))
	defer adm.Close()
	createTopic(ctx, adm, topic, int32(parts), nil)
	cl := newClient(bootstrap, kgo.DisableIdempotentWrite(), kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	defer cl.Close()
	var rs []*kgo.Record
	for i := 0; i < count; i++ {
		rs = append(rs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("key-%d", i%101)), Value: []byte(strconv.Itoa(i))})
	}
	produced := produceSync(ctx, cl, rs)
	var all []int32
	for p := 0; p < parts; p++ {
		all = append(all, int32(p))
	}
	return out{"produced": produced, "records": consumeAll(ctx, bootstrap, topic, all, count)}
}

// Scenario "too-large": one record at exactly max.message.bytes (batch of 1048588
// bytes), then one a byte larger.
func scenarioTooLarge(ctx context.Context, bootstrap, topic string, _ []string) out {
	adm := kadm.NewClient(newClient(bootstrap))
	defer adm.Close()
	createTopic(ctx, adm, topic, 1, nil)
	cl := newClient(bootstrap, kgo.DisableIdempotentWrite(), kgo.ProducerBatchMaxBytes(8<<20),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.BrokerMaxWriteBytes(64<<20), kgo.RecordRetries(1))
	defer cl.Close()
	ok := produceSync(ctx, cl, []*kgo.Record{{Topic: topic, Value: []byte(strings.Repeat("a", 1048588-72))}})
	big := produceSync(ctx, cl, []*kgo.Record{{Topic: topic, Value: []byte(strings.Repeat("b", 1048588-71))}})
	return out{"ok": ok, "big": big}
}

func cfgMap(rc kadm.ResourceConfigs, topic string) map[string]any {
	m := map[string]any{}
	for _, r := range rc {
		if r.Name != topic {
			continue
		}
		if r.Err != nil {
			m["_error"] = errInfo(r.Err)
		}
		for _, c := range r.Configs {
			v := ""
			if c.Value != nil {
				v = *c.Value
			}
			m[c.Key] = []any{v, c.Source.String()}
		}
	}
	return m
}

func pick(m map[string]any, keys ...string) map[string]any {
	o := map[string]any{}
	for _, k := range keys {
		o[k] = m[k]
	}
	return o
}

// Scenario "admin": create (with configs), create again, describe, alter (incremental and
// legacy), create partitions, produce, list offsets, delete records, log dirs, delete.
func scenarioAdmin(ctx context.Context, bootstrap, topic string, _ []string) out {
	o := out{}
	cl := newClient(bootstrap, kgo.DisableIdempotentWrite())
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ret := "3600000"
	createTopic(ctx, adm, topic, 2, map[string]*string{"retention.ms": &ret})
	again, err := adm.CreateTopic(ctx, 2, 1, nil, topic)
	if err == nil {
		err = again.Err
	}
	o["create_again"] = errInfo(err)

	keys := []string{"retention.ms", "cleanup.policy", "max.message.bytes", "segment.bytes", "retention.bytes"}
	rc, err := adm.DescribeTopicConfigs(ctx, topic)
	must(err, "describe configs")
	o["configs_created"] = pick(cfgMap(rc, topic), keys...)

	seg := "536870912"
	ar, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "segment.bytes", Value: &seg},
		{Op: kadm.DeleteConfig, Name: "retention.ms"},
	}, topic)
	must(err, "incremental alter")
	o["incremental_alter"] = errInfo(ar[0].Err)
	rc = describeUntil(ctx, adm, topic, "segment.bytes", seg)
	o["configs_incremental"] = pick(cfgMap(rc, topic), keys...)

	// Legacy AlterConfigs replaces the whole set of overrides: segment.bytes goes back.
	pol := "delete"
	ar, err = adm.AlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "cleanup.policy", Value: &pol},
		{Name: "retention.bytes", Value: func() *string { s := "1000000"; return &s }()}}, topic)
	must(err, "legacy alter")
	o["legacy_alter"] = errInfo(ar[0].Err)
	rc = describeUntil(ctx, adm, topic, "retention.bytes", "1000000")
	o["configs_legacy"] = pick(cfgMap(rc, topic), keys...)

	cp, err := adm.UpdatePartitions(ctx, 4, topic)
	must(err, "create partitions")
	o["create_partitions"] = errInfo(cp[topic].Err)
	cp, err = adm.UpdatePartitions(ctx, 3, topic)
	must(err, "shrink partitions")
	o["shrink_partitions"] = errInfo(cp[topic].Err)
	for ctx.Err() == nil { // wait for the new partitions
		md, err := adm.Metadata(ctx, topic)
		if err == nil && len(md.Topics[topic].Partitions) == 4 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	base := int64(1_600_000_000_000)
	var rs []*kgo.Record
	for p := int32(0); p < 4; p++ {
		for i := 0; i < 10*int(p+1); i++ {
			ts := base + int64(i)*100
			if i == 3 {
				ts = base + 50_000 // the max timestamp sits at offset 3
			}
			rs = append(rs, &kgo.Record{Topic: topic, Partition: p, Value: []byte(fmt.Sprintf("p%d-%d", p, i)), Timestamp: time.UnixMilli(ts)})
		}
	}
	pc := newClient(bootstrap, kgo.DisableIdempotentWrite(), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer pc.Close()
	for _, r := range pc.ProduceSync(ctx, rs...) {
		must(r.Err, "produce")
	}

	lo := func(l kadm.ListedOffsets, err error) map[string]any {
		must(err, "list offsets")
		m := map[string]any{}
		l.Each(func(x kadm.ListedOffset) {
			m[strconv.Itoa(int(x.Partition))] = []any{x.Offset, x.Timestamp, errInfo(x.Err)}
		})
		return m
	}
	o["start"] = lo(adm.ListStartOffsets(ctx, topic))
	o["end"] = lo(adm.ListEndOffsets(ctx, topic))
	o["after_milli"] = lo(adm.ListOffsetsAfterMilli(ctx, base+450, topic))
	o["max_ts"] = lo(adm.ListMaxTimestampOffsets(ctx, topic))

	var del kadm.Offsets
	del.AddOffset(topic, 1, 15, -1)
	del.AddOffset(topic, 2, 31, -1) // past the end (30): OFFSET_OUT_OF_RANGE
	dr, err := adm.DeleteRecords(ctx, del)
	must(err, "delete records")
	d := map[string]any{}
	for p, r := range dr[topic] {
		d[strconv.Itoa(int(p))] = []any{r.LowWatermark, errInfo(r.Err)}
	}
	o["delete_records"] = d
	o["start_after_delete"] = lo(adm.ListStartOffsets(ctx, topic))

	md, err := adm.BrokerMetadata(ctx)
	must(err, "metadata")
	var brokers []any
	for _, b := range md.Brokers {
		brokers = append(brokers, []any{b.NodeID, b.Host, b.Port})
	}
	o["brokers"] = brokers
	o["controller"] = md.Controller

	ld, err := adm.DescribeAllLogDirs(ctx, kadm.TopicsSet{topic: {0: {}, 1: {}, 2: {}, 3: {}}})
	must(err, "log dirs")
	parts := map[string]any{}
	ndirs := 0
	for _, dirs := range ld {
		for _, dir := range dirs {
			ndirs++
			if dir.Err != nil {
				fail("log dir %s: %v", dir.Dir, dir.Err)
			}
			for _, ps := range dir.Topics[topic] {
				parts[strconv.Itoa(int(ps.Partition))] = ps.Size
			}
		}
	}
	// Log dirs per broker (DescribeAllLogDirs asks every broker of the cluster).
	o["log_dirs"] = ndirs / len(ld)
	o["log_dir_sizes"] = parts

	dt, err := adm.DeleteTopics(ctx, topic)
	must(err, "delete topic")
	o["delete"] = errInfo(dt[topic].Err)
	for ctx.Err() == nil {
		ts, err := adm.ListTopics(ctx)
		if err == nil && !ts.Has(topic) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	dt, err = adm.DeleteTopics(ctx, topic)
	must(err, "delete topic again")
	o["delete_again"] = errInfo(dt[topic].Err)
	return o
}

func main() {
	if len(os.Args) < 4 {
		fail("usage: franzgo BOOTSTRAP SCENARIO TOPIC [ARGS...]")
	}
	bootstrap, scenario, topic, args := os.Args[1], os.Args[2], os.Args[3], os.Args[4:]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var o out
	switch scenario {
	case "produce":
		o = scenarioProduce(ctx, bootstrap, topic, args)
	case "keyed":
		o = scenarioKeyed(ctx, bootstrap, topic, args)
	case "too-large":
		o = scenarioTooLarge(ctx, bootstrap, topic, args)
	case "admin":
		o = scenarioAdmin(ctx, bootstrap, topic, args)
	case "txn-session":
		o = scenarioTxnSession(ctx, bootstrap, topic, args)
	default:
		fail("unknown scenario %s", scenario)
	}
	b, err := json.Marshal(o)
	must(err, "json")
	fmt.Println(string(b))
}

// describeUntil describes a topic's configs until `key` has `want` (at most 5 s): in a
// cluster the broker that answers may apply a change made through another broker a few
// milliseconds later, as in any Kafka cluster.
func describeUntil(ctx context.Context, adm *kadm.Client, topic, key, want string) kadm.ResourceConfigs {
	deadline := time.Now().Add(5 * time.Second)
	for {
		rc, err := adm.DescribeTopicConfigs(ctx, topic)
		must(err, "describe configs")
		for _, r := range rc {
			for _, c := range r.Configs {
				if c.Key == key && c.Value != nil && *c.Value == want {
					return rc
				}
			}
		}
		if time.Now().After(deadline) {
			return rc
		}
		time.Sleep(20 * time.Millisecond)
	}
}
