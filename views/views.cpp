// moefy_views: Qt widgets over the core (filled in by the studio work, issue 6).
namespace moefy::views {
int viewsVersion() { return 1; }
}  // namespace moefy::views
