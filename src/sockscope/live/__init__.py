"""Change over time: snapshots of the inventory compared, counted and kept, for top, events, the exporter and the web page."""
