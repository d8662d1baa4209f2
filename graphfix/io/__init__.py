"""Reading and writing model files: the only place that touches them.

    graph_def_file.py   GraphDef files (.pb, .pbtxt) in and out, atomically; large files streamed
    saved_model_dir.py  SavedModel directories in and out (only saved_model.pb is rewritten)
    stream_read.py      one-pass reading of a binary GraphDef, large contents straight into numpy
    stream_write.py     node-by-node writing of a slim GraphDef with its values put back
    wire.py             the bit of protobuf's wire format the stream reader and writer need
"""
