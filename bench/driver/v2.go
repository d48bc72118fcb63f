package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// upload posts one file of sizeMiB (content unique to this call, so nothing
// deduplicates) through the Cloud asset API ("v1": POST /api/assets) or
// Comfy API v2 (POST /api/v2/assets), streamed, and reports MB/s; the
// asset is deleted afterwards.
func upload(base, target, scenario, api string, sizeMiB int) error {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	name := "bench-" + hex.EncodeToString(nonce[:8]) + ".bin"
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		var err error
		if api == "v2" {
			_ = mw.WriteField("content_type", "application/octet-stream")
			_ = mw.WriteField("file_path", name)
		} else {
			_ = mw.WriteField("tags", "input")
		}
		fw, err := mw.CreateFormFile("file", name)
		if err == nil {
			_, err = fw.Write(nonce[:])
		}
		block := make([]byte, 1<<20)
		for i := range block {
			block[i] = byte(i * 31)
		}
		for i := 0; i < sizeMiB && err == nil; i++ {
			block[0], block[1] = byte(i), byte(i>>8) // no two blocks alike
			_, err = fw.Write(block)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	path := "/api/assets"
	if api == "v2" {
		path = "/api/v2/assets"
	}
	req, err := http.NewRequest("POST", base+path, pr)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	secs := time.Since(t0).Seconds()
	if resp.StatusCode != 201 {
		return fmt.Errorf("upload: %d %s", resp.StatusCode, body)
	}
	var a struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(body, &a)
	emit(result{scenario, target, "throughput", "MB/s", float64(sizeMiB<<20) / 1e6 / secs})
	del := base + "/api/assets/" + a.ID
	if api == "v2" {
		del = base + "/api/v2/assets/" + a.ID
	}
	dreq, _ := http.NewRequest("DELETE", del, nil)
	if resp, err := client.Do(dreq); err == nil {
		resp.Body.Close()
	}
	return nil
}

// v2Post submits a workflow and returns the job id.
func v2Post(base, workflow string) (string, error) {
	resp, err := client.Post(base+"/api/v2/jobs", "application/json", strings.NewReader(`{"workflow":`+workflow+`}`))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var j struct{ ID, Status string }
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil || resp.StatusCode != 201 {
		return "", fmt.Errorf("submit: %d %v", resp.StatusCode, err)
	}
	return j.ID, nil
}

func v2Status(base, id string) string {
	resp, err := client.Get(base + "/api/v2/jobs/" + id)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var j struct{ Status string }
	_ = json.NewDecoder(resp.Body).Decode(&j)
	return j.Status
}

// streams opens n event streams on a job waiting behind a running one and
// reports comfyshim's resident memory per open stream; then lets the job
// run and reports the events delivered per second until every stream has
// seen the end.
func streams(base, target string, pid, n int) error {
	blocker, err := v2Post(base, `{"1":{"class_type":"Wait","inputs":{}}}`)
	if err != nil {
		return err
	}
	for i := 0; i < 500 && v2Status(base, blocker) != "running"; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	job, err := v2Post(base, `{"9":{"class_type":"SaveImage","inputs":{}}}`)
	if err != nil {
		return err
	}
	before := readRSS(pid)
	tr := &http.Transport{MaxIdleConnsPerHost: -1}
	sc := &http.Client{Transport: tr}
	var events atomic.Int64
	var opened, ended sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < n; i++ {
		opened.Add(1)
		ended.Add(1)
		go func() {
			defer ended.Done()
			resp, err := sc.Get(base + "/api/v2/jobs/" + job + "/events")
			if err != nil || resp.StatusCode != 200 {
				failed.Add(1)
				opened.Done()
				if resp != nil {
					resp.Body.Close()
				}
				return
			}
			defer resp.Body.Close()
			rd := bufio.NewReader(resp.Body)
			first := true
			for {
				line, err := rd.ReadString('\n')
				if err != nil {
					if first {
						opened.Done()
					}
					return
				}
				if strings.HasPrefix(line, "event: ") {
					events.Add(1)
					if first {
						first = false
						opened.Done()
					}
				}
			}
		}()
	}
	opened.Wait()
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d of %d streams were refused", f, n)
	}
	time.Sleep(500 * time.Millisecond) // let the process settle
	after := readRSS(pid)
	emit(result{fmt.Sprintf("v2_event_streams_%d", n), target, "rss_per_stream", "KiB", float64(after-before) / float64(n) / 1024})
	start := events.Load()
	t0 := time.Now()
	req, _ := http.NewRequest("POST", base+"/api/v2/jobs/"+blocker+"/cancel", nil)
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close()
	}
	ended.Wait()
	secs := time.Since(t0).Seconds()
	emit(result{fmt.Sprintf("v2_event_streams_%d", n), target, "events_per_s", "events/s", float64(events.Load()-start) / secs})
	emit(result{fmt.Sprintf("v2_event_streams_%d", n), target, "fan_out_until_done", "s", secs})
	return nil
}
