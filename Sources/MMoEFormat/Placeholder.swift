import MMoECore
