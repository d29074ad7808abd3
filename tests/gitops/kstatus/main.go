// Command kstatus prints the status that kstatus, the library Flux's `wait` and health checks use,
// computes for each Kubernetes object read as JSON from stdin: one JSON line per object, with the
// status (InProgress, Current, Failed, Terminating, Unknown) and kstatus's message.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	decoder := json.NewDecoder(os.Stdin)
	for {
		var raw json.RawMessage
		err := decoder.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: reading an object from stdin: %v\n", err)
			os.Exit(2)
		}
		// UnmarshalJSON keeps integers as int64, as kstatus reads metadata.generation.
		object := &unstructured.Unstructured{}
		if err := object.UnmarshalJSON(raw); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: decoding an object: %v\n", err)
			os.Exit(2)
		}
		computed, err := status.Compute(object)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
			os.Exit(1)
		}
		line, _ := json.Marshal(result{Status: computed.Status.String(), Message: computed.Message})
		fmt.Println(string(line))
	}
}
