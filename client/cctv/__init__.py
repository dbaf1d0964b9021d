"""facialattr.client.cctv: streams -> faces -> tracks -> attributes -> recommendations."""
