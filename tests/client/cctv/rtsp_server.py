"""A small RTSP server for the tests: streams an MJPEG AVI file as RTP/JPEG on 127.0.0.1, in real time.

Runs under the system Python (``/usr/bin/python3``) with GStreamer's RTSP server
bindings (Debian: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
gstreamer1.0-plugins-good). Usage:
``rtsp_server.py PORT VIDEO.avi``; serves rtsp://127.0.0.1:PORT/cam and prints
``ready PORT`` once listening (PORT 0: the server binds a free port itself and prints it).
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, video = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        # The demuxer stamps each frame and identity sync=true releases it at that time, as a camera would;
        # re-encoding gives baseline JPEGs that RTP/JPEG (RFC 2435) can carry.
        f'( filesrc location="{video}" ! avidemux ! jpegdec ! jpegenc ! identity sync=true ! rtpjpegpay name=pay0 pt=26 )'
    )
    # One pipeline for every client, as a camera would have.
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print(f"ready {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
