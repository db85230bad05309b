"""The pickup loop's collaborators, one job each; :mod:`mission_control.mc_pickup` tells the story of a
tick with them and holds the plugin hook call sites.

* :mod:`.context`: what they share (config, the facade, the watcher, this controller's identity);
* :mod:`.lease`: this controller's lease, and fencing of the processes it runs;
* :mod:`.dispatch`: claiming todo tickets and starting their workers;
* :mod:`.reviews`: starting the shadow reviewer for reported shas;
* :mod:`.reports`: reading what ended runs reported and storing it, before anything acts on it;
* :mod:`.apply`: applying stored reports, each exactly once;
* :mod:`.recovery`: taking over what gone controllers left, and cleaning up after crashes.

Each step returns whether it made progress; nothing sets a shared flag.
"""
