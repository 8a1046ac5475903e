package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// version is one value of a key from a moment on (nil Val: deleted).
type version struct {
	At  time.Time
	Rev int64
	Val []byte
}

// history follows every key under a prefix with an etcd watch, straight to
// the etcd members (not through any host's proxy), and keeps each key's
// values with the time they were seen. It is the checker's view of "what
// etcd said at that moment", approximately: a watch event arrives a few
// milliseconds after the write, longer while a member is down.
type history struct {
	cli    *clientv3.Client
	prefix string

	mu      sync.Mutex
	keys    map[string][]version
	lastRev int64
	gaps    []string // watch interruptions
	cancel  context.CancelFunc
	done    chan struct{}
}

func dialEtcd(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
		Logger:               zap.NewNop(),
	})
}

func startHistory(cli *clientv3.Client, prefix string) (*history, error) {
	h := &history{cli: cli, prefix: prefix, keys: map[string][]version{}}
	var resp *clientv3.GetResponse
	var err error
	for i := 0; i < 10; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		resp, err = cli.Get(ctx, prefix, clientv3.WithPrefix())
		cancel()
		if err == nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("etcd: get %s: %w", prefix, err)
	}
	now := time.Now()
	for _, kv := range resp.Kvs {
		h.keys[string(kv.Key)] = []version{{At: now, Rev: kv.ModRevision, Val: kv.Value}}
	}
	h.lastRev = resp.Header.Revision
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go h.watch(ctx)
	return h, nil
}

func (h *history) stop() {
	h.cancel()
	<-h.done
}

func (h *history) watch(ctx context.Context) {
	defer close(h.done)
	for ctx.Err() == nil {
		h.mu.Lock()
		from := h.lastRev + 1
		h.mu.Unlock()
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		ch := h.cli.Watch(wctx, h.prefix, clientv3.WithPrefix(), clientv3.WithRev(from))
		broke := ""
		for resp := range ch {
			if err := resp.Err(); err != nil {
				broke = err.Error()
				break
			}
			now := time.Now()
			h.mu.Lock()
			for _, ev := range resp.Events {
				v := version{At: now, Rev: ev.Kv.ModRevision}
				if ev.Type == clientv3.EventTypePut {
					v.Val = ev.Kv.Value
				} else {
					v.Rev = resp.Header.Revision
				}
				k := string(ev.Kv.Key)
				h.keys[k] = append(h.keys[k], v)
			}
			if resp.Header.Revision > h.lastRev {
				h.lastRev = resp.Header.Revision
			}
			h.mu.Unlock()
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		h.mu.Lock()
		h.gaps = append(h.gaps, fmt.Sprintf("%s watch ended (%s), resuming from revision %d", clock(time.Now()), broke, h.lastRev+1))
		h.mu.Unlock()
		time.Sleep(200 * time.Millisecond)
	}
}

// record is a domains/ or disks/ value.
type record struct {
	Host  string `json:"host"`
	UUID  string `json:"uuid"`
	Name  string `json:"name"`
	Lease string `json:"lease"`
}

type migrationRec struct {
	From string `json:"from"`
	To   string `json:"to"`
}

type unfencedGuest struct {
	UUID  string   `json:"uuid"`
	Name  string   `json:"name"`
	Disks []string `json:"disks"`
}

type unfencedRec struct {
	Guests []unfencedGuest `json:"guests"`
}

type intentRec struct {
	Want     string `json:"want"`
	Name     string `json:"name"`
	Restarts int    `json:"restarts"`
	Reason   string `json:"reason"`
}

// matchDuring reports whether a key under prefix (one key when exact) had,
// at some moment between from and to, a value for which pred holds.
func (h *history) matchDuring(prefix string, exact bool, from, to time.Time, pred func(key string, val []byte) bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, vs := range h.keys {
		if exact && k != prefix || !exact && !strings.HasPrefix(k, prefix) {
			continue
		}
		for i, v := range vs {
			if v.Val == nil || v.At.After(to) {
				continue
			}
			if i+1 < len(vs) && vs[i+1].At.Before(from) {
				continue // replaced before the window
			}
			if pred(k, v.Val) {
				return true
			}
		}
	}
	return false
}

// describe lists a key's values seen between from and to, for reports.
func (h *history) describe(prefix string, from, to time.Time) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for k, vs := range h.keys {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		for i, v := range vs {
			if v.At.After(to) || (i+1 < len(vs) && vs[i+1].At.Before(from)) {
				continue
			}
			val := "(deleted)"
			if v.Val != nil {
				val = string(v.Val)
			}
			out = append(out, fmt.Sprintf("%s rev %d %s = %s", clock(v.At), v.Rev, k, val))
		}
	}
	sort.Strings(out)
	return out
}

func (h *history) watchGaps() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.gaps...)
}

// getPrefix reads every key under prefix now (for the quiescence check).
func getPrefix(cli *clientv3.Client, prefix string) (map[string][]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv.Value
	}
	return out, nil
}

func decode[T any](b []byte) (T, bool) {
	var v T
	err := json.Unmarshal(b, &v)
	return v, err == nil
}
