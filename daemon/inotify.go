package daemon

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// watchDir reports, on the returned channel, that something changed in dir: a
// file written, created, renamed into place or removed (a cluster file
// replaced by a rename, or a Kubernetes ConfigMap's ..data symlink swapped).
// Notifications coalesce; the channel closes when ctx ends or the watch fails.
// It lets podnetd see a new cluster file at once instead of at its next poll.
func watchDir(ctx context.Context, dir string) (<-chan struct{}, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	const mask = unix.IN_CLOSE_WRITE | unix.IN_MOVED_TO | unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_ATTRIB
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("inotify watch %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), "inotify") // non-blocking: reads park in the runtime's poller, Close wakes them
	out := make(chan struct{}, 1)
	go func() {
		<-ctx.Done()
		f.Close()
	}()
	go func() {
		defer close(out)
		buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			select {
			case out <- struct{}{}:
			default: // one pending notification is enough
			}
		}
	}()
	return out, nil
}
