package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// samples is one scrape.
type samples []sample

// sum adds the values of every sample called name whose labels include
// match.
func (s samples) sum(name string, match map[string]string) float64 {
	var total float64
	for _, x := range s {
		if x.name == name && x.matches(match) {
			total += x.value
		}
	}
	return total
}

// has reports whether any sample is called name.
func (s samples) has(name string) bool {
	for _, x := range s {
		if x.name == name {
			return true
		}
	}
	return false
}

// by adds the values of every sample called name whose labels include
// match, grouped by the value of label.
func (s samples) by(name, label string, match map[string]string) map[string]float64 {
	out := map[string]float64{}
	for _, x := range s {
		if x.name == name && x.matches(match) {
			out[x.labels[label]] += x.value
		}
	}
	return out
}

func (x sample) matches(match map[string]string) bool {
	for k, v := range match {
		if x.labels[k] != v {
			return false
		}
	}
	return true
}

// scrape reads a /metrics page.
func scrape(ctx context.Context, url string) (samples, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	s, err := parseProm(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return s, nil
}

// parseProm reads the Prometheus text format leniently: comments, and
// lines it cannot read, are skipped.
func parseProm(r io.Reader) (samples, error) {
	var out samples
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if x, ok := parsePromLine(strings.TrimSpace(sc.Text())); ok {
			out = append(out, x)
		}
	}
	return out, sc.Err()
}

// parsePromLine reads `name{k="v",...} value [timestamp]`.
func parsePromLine(line string) (sample, bool) {
	if line == "" || line[0] == '#' {
		return sample{}, false
	}
	x := sample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return sample{}, false
	}
	x.name, line = line[:i], line[i:]
	if line[0] == '{' {
		rest, ok := parseLabels(line[1:], x.labels)
		if !ok {
			return sample{}, false
		}
		line = rest
	}
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return sample{}, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return sample{}, false
	}
	x.value = v
	return x, true
}

// parseLabels reads `k="v",...}` into m and returns what follows the '}'.
func parseLabels(s string, m map[string]string) (string, bool) {
	for {
		s = strings.TrimLeft(s, " ,")
		if s == "" {
			return "", false
		}
		if s[0] == '}' {
			return s[1:], true
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return "", false
		}
		key := strings.TrimSpace(s[:eq])
		s = s[eq+2:]
		var val strings.Builder
		closed := false
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(s[i])
				}
				continue
			}
			if c == '"' {
				s = s[i+1:]
				closed = true
				break
			}
			val.WriteByte(c)
		}
		if !closed {
			return "", false
		}
		m[key] = val.String()
	}
}
