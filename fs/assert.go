package fs

import gofs "github.com/hanwen/go-fuse/v2/fs"

// What each node can do, checked at compile time.
var (
	_ gofs.NodeGetattrer = (*rootNode)(nil)
	_ gofs.NodeReaddirer = (*rootNode)(nil)
	_ gofs.NodeLookuper  = (*rootNode)(nil)

	_ gofs.NodeGetattrer = (*dirNode)(nil)
	_ gofs.NodeReaddirer = (*dirNode)(nil)
	_ gofs.NodeLookuper  = (*dirNode)(nil)

	_ gofs.NodeGetattrer   = (*fileNode)(nil)
	_ gofs.NodeOpener      = (*fileNode)(nil)
	_ gofs.NodeReader      = (*fileNode)(nil)
	_ gofs.NodeFlusher     = (*fileNode)(nil)
	_ gofs.NodeOnForgetter = (*fileNode)(nil)
	_ shownNode            = (*fileNode)(nil)

	_ gofs.NodeSetattrer     = readOnly{}
	_ gofs.NodeCreater       = readOnly{}
	_ gofs.NodeMkdirer       = readOnly{}
	_ gofs.NodeMknoder       = readOnly{}
	_ gofs.NodeUnlinker      = readOnly{}
	_ gofs.NodeRmdirer       = readOnly{}
	_ gofs.NodeRenamer       = readOnly{}
	_ gofs.NodeSymlinker     = readOnly{}
	_ gofs.NodeLinker        = readOnly{}
	_ gofs.NodeSetxattrer    = readOnly{}
	_ gofs.NodeRemovexattrer = readOnly{}
	_ gofs.NodeFsyncer       = readOnly{}
	_ gofs.NodeStatfser      = readOnly{}
)
