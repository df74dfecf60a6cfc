package projection

import (
	"bytes"
	"fmt"
	"sync"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/twinhub/twinhub/pipeline/twin"
)

// Twins are kept compressed with S2 (github.com/klauspost/compress/s2,
// already in the build through nats-server) against a dictionary made of
// sample twins of the fleet itself: the keys, $metadata and timestamps of a
// fleet's twins repeat, so a 2 KB twin keeps about 250-400 bytes, and a page
// of 100 twins decompresses in about 0.2 ms.

// dictSamples is how many twins a dictionary is made of (S2 dictionaries
// hold at most 64 KiB; only the last 64 KiB count).
const dictSamples = 32

// maxDicts bounds the dictionaries a projection makes over its life: the
// first from a blank twin, then one each time the fleet has grown 16-fold
// since the last, from samples of it.
const maxDicts = 8

// codec compresses twins. Only the applier changes it; queries read it
// under the projection's shared lock.
type codec struct {
	// scratch holds encoding buffers, which S2 sizes for the worst case.
	scratch sync.Pool
	dicts   []*s2.Dict
	// trainedOn is how many twins the fleet had when the newest dictionary
	// was made (0 for the blank-twin one).
	trainedOn int
}

func newCodec() *codec {
	seed, err := twin.New("deviceId", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)).MarshalJSON()
	if err != nil {
		panic("BUG: projection: rendering a blank twin: " + err.Error())
	}
	return &codec{dicts: []*s2.Dict{makeDict([][]byte{seed})}, scratch: sync.Pool{New: func() any { return new([]byte) }}}
}

func makeDict(samples [][]byte) *s2.Dict {
	var data []byte
	for _, s := range samples {
		data = append(data, s...)
	}
	for len(data) < s2.MinDictSize {
		data = append(data, ' ')
	}
	d := s2.MakeDict(data, []byte(`{"deviceId":"`))
	if d == nil {
		panic("BUG: projection: s2 refused a dictionary")
	}
	return d
}

// rawBlob marks a twin kept uncompressed.
const rawBlob = 255

// encode compresses a twin with the newest dictionary, and returns the
// dictionary's index (rawBlob when compression did not pay).
func (c *codec) encode(twinJSON []byte) ([]byte, uint8) {
	d := uint8(len(c.dicts) - 1)
	buf := c.scratch.Get().(*[]byte)
	defer c.scratch.Put(buf)
	*buf = c.dicts[d].Encode((*buf)[:cap(*buf)], twinJSON)
	if len(*buf) >= len(twinJSON)*7/8 {
		return bytes.Clone(twinJSON), rawBlob
	}
	return bytes.Clone(*buf), d
}

// decode returns the twin JSON of a blob; callers must not change it.
func (c *codec) decode(blob []byte, dict uint8) []byte {
	if dict == rawBlob {
		return blob
	}
	b, err := c.dicts[dict].Decode(nil, blob)
	if err != nil {
		panic(fmt.Sprintf("BUG: projection: a stored twin does not decompress: %v", err))
	}
	return b
}

// wantsTraining reports whether the fleet has grown enough since the last
// dictionary to make a new one.
func (c *codec) wantsTraining(fleet int) bool {
	return len(c.dicts) < maxDicts && fleet >= dictSamples && fleet >= 16*c.trainedOn
}

func (c *codec) train(fleet int, samples [][]byte) {
	c.dicts = append(c.dicts, makeDict(samples))
	c.trainedOn = fleet
}
