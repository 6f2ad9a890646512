package main

import (
	"context"
	"strconv"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Scenario "txn-session": franz-go's GroupTransactSession reads TOPIC (COUNT records
// written here first, outside any transaction) in a consumer group and writes each value,
// prefixed, to TOPIC-out in transactions that also commit the group's offsets. Every other
// transaction is aborted on purpose, so its output and offsets must vanish and its input
// be read again. Reports what a read_committed reader sees in TOPIC-out and the group's
// committed offset.
func scenarioTxnSession(ctx context.Context, bootstrap, topic string, args []string) out {
	count, err := strconv.Atoi(args[0])
	must(err, "count")
	dst := topic + "-out"
	group := topic + "-group"
	admin := kadm.NewClient(newClient(bootstrap))
	for _, t := range []string{topic, dst} {
		_, err := admin.CreateTopic(ctx, 1, 1, nil, t)
		must(err, "create "+t)
	}
	feed := newClient(bootstrap)
	for i := 0; i < count; i++ {
		feed.Produce(ctx, &kgo.Record{Topic: topic, Value: []byte(strconv.Itoa(i))}, nil)
	}
	must(feed.Flush(ctx), "feed")
	feed.Close()

	sess, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(bootstrap),
		kgo.TransactionalID(topic+"-txn"),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200e6),
	)
	must(err, "session")
	done, rounds := 0, 0
	for done < count && ctx.Err() == nil {
		fetches := sess.PollRecords(ctx, 7)
		if fetches.IsClientClosed() {
			fail("client closed")
		}
		var recs []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
		if len(recs) == 0 {
			continue
		}
		must(sess.Begin(), "begin")
		for _, r := range recs {
			out := &kgo.Record{Topic: dst, Value: append([]byte("x"), r.Value...)}
			// A record of a round being aborted fails with ErrAborting; End reports
			// whether the round committed.
			sess.Produce(ctx, out, nil)
		}
		rounds++
		abort := rounds%2 == 0
		how := kgo.TryCommit
		if abort {
			how = kgo.TryAbort
		}
		committed, err := sess.End(ctx, how)
		must(err, "end")
		if committed {
			done += len(recs)
		}
	}
	sess.Close()

	reader := newClient(bootstrap, kgo.ConsumeTopics(dst),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200e6))
	defer reader.Close()
	var values []string
	for len(values) < count && ctx.Err() == nil {
		reader.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			values = append(values, string(r.Value))
		})
	}
	offsets, err := admin.FetchOffsets(ctx, group)
	must(err, "fetch offsets")
	o, ok := offsets.Lookup(topic, 0)
	if !ok {
		fail("no committed offset for %s", group)
	}
	return out{"values": values, "committed": o.At, "rounds": rounds}
}
