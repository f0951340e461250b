global using Xunit;

// Tests share libtorch's global random generator and both cores: run them one class at a time, so that seeded
// tests cannot draw from the generator between another test's manual_seed and its use.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
