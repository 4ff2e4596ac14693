#pragma once
// Table items shared by the views' numeric tables.
#include <QTableWidgetItem>
#include <QVariant>

namespace moefy::views {

/// A table cell that shows its text and sorts by the number stored in
/// Qt::UserRole when both cells have one (text order otherwise), so "1,425"
/// sorts after "385.47" and "-" cells sort by text. GUI thread only.
class NumberItem : public QTableWidgetItem {
 public:
  using QTableWidgetItem::QTableWidgetItem;
  bool operator<(const QTableWidgetItem& other) const override {
    QVariant a = data(Qt::UserRole), b = other.data(Qt::UserRole);
    if (a.isValid() && b.isValid()) return a.toDouble() < b.toDouble();
    return QTableWidgetItem::operator<(other);
  }
};

}  // namespace moefy::views
